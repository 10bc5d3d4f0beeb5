"""Bring Radicale's storage in line with the files UMS installed (node-side code).

Run by the controller after every install (and after a crash between install and this
step, since converge re-activates a service whose loaded hash is stale). Idempotent:

* every login of the users file gets its own ``calendar`` (events and tasks) and
  ``contacts`` collections when missing; existing data is never touched;
* every line ``<key> <sha256> <name>`` of ``gal/index`` is a published global address
  book: collection ``<key>/addressbook`` is replaced as a whole from ``gal/<key>.vcf``
  (Radicale's own whole-collection upload, atomic) when the sha256 it was last loaded
  from differs; ``<key>`` collections no longer listed are deleted.

Uses Radicale's storage API under its storage lock, so a running Radicale never sees a
half-written collection. Arguments: the Radicale configuration file, the UMS root.
"""

import hashlib
import os
import sys

import vobject
from radicale import config, storage
from radicale import item as radicale_item

#: Beside the items of a published address book: the sha256 it was loaded from. A dot
#: file: Radicale's storage ignores names starting with a dot.
SOURCE_FILE = ".ums-source"
GAL_PREFIX = "gal-"


def read_users(root):
    users = []
    with open(os.path.join(root, "users"), encoding="utf-8") as handle:
        for line in handle:
            if line.strip() and not line.startswith("#") and ":" in line:
                users.append(line.split(":", 1)[0])
    return users


def read_index(root):
    books = {}
    with open(os.path.join(root, "gal", "index"), encoding="utf-8") as handle:
        for line in handle:
            if line.strip() and not line.startswith("#"):
                key, digest, name = line.rstrip("\n").split(" ", 2)
                books[key] = (digest, name)
    return books


def exists(store, path):
    return any(True for _ in store.discover(path, depth="0"))


def loaded_from(folder, key):
    try:
        with open(os.path.join(folder, key, "addressbook", SOURCE_FILE)) as handle:
            return handle.read().strip()
    except OSError:
        return None


def gal_items(data, path):
    items = []
    for card in vobject.readComponents(data.decode("utf-8")) if data.strip() else ():
        item = radicale_item.Item(collection_path=path, vobject_item=card)
        item.prepare()
        items.append(item)
    return items


def main(conf_path, root):
    configuration = config.load([(conf_path, False)])
    # One sync of the whole file system at the end instead of an fsync per item (a
    # 10,000-card book took 54 s with, 3 s without). Safe: the marker that says a book
    # is loaded is written only after that sync, so a crash before it reloads the book.
    configuration.update({"storage": {"_filesystem_fsync": "False"}}, "ums-sync", privileged=True)
    store = storage.load(configuration)
    folder = os.path.join(configuration.get("storage", "filesystem_folder"), "collection-root")
    users = read_users(root)
    books = read_index(root)
    done = []
    with store.acquire_lock("w", "ums-sync"):
        for login in users:
            # Plain directory checks: the storage API's discover() reads each collection's
            # metadata, 5 ms a user, and nearly every user already has both collections.
            home = os.path.join(folder, login)
            if not os.path.isdir(home):
                store.create_collection(f"/{login}/")
            if not os.path.isdir(os.path.join(home, "calendar")):
                store.create_collection(
                    f"/{login}/calendar/",
                    props={
                        "tag": "VCALENDAR",
                        "D:displayname": "Calendar",
                        "C:supported-calendar-component-set": "VEVENT,VTODO,VJOURNAL",
                    },
                )
                done.append("calendar " + login)
            if not os.path.isdir(os.path.join(home, "contacts")):
                store.create_collection(
                    f"/{login}/contacts/",
                    props={"tag": "VADDRESSBOOK", "D:displayname": "Contacts"},
                )
                done.append("contacts " + login)
        for key, (digest, name) in sorted(books.items()):
            path = f"/{key}/addressbook/"
            if loaded_from(folder, key) == digest:
                continue
            with open(os.path.join(root, "gal", key + ".vcf"), "rb") as handle:
                data = handle.read()
            if hashlib.sha256(data).hexdigest() != digest:
                sys.exit(f"gal/{key}.vcf does not match its index entry")
            if not exists(store, f"/{key}/"):
                store.create_collection(f"/{key}/")
            store.create_collection(
                path,
                items=gal_items(data, path.strip("/")),
                props={"tag": "VADDRESSBOOK", "D:displayname": name},
            )
            os.sync()
            marker = os.path.join(folder, key, "addressbook", SOURCE_FILE)
            with open(marker + ".tmp", "w") as handle:
                handle.write(digest + "\n")
            os.replace(marker + ".tmp", marker)
            done.append("gal " + key)
        for col in list(store.discover("/", depth="1")):
            key = col.path.strip("/")
            if key.startswith(GAL_PREFIX) and key not in books:
                col.delete()
                done.append("removed " + key)
    os.sync()  # the users' new collections too
    print("synced: " + (", ".join(done) if done else "nothing to do"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
