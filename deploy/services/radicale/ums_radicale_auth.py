"""Radicale authentication plugin installed on cloud-files nodes by UMS (node-side code).

Mailbox passwords are stored as SHA512-CRYPT (``$6$``), the hash Courier checks; Radicale
3.1's own htpasswd backend knows only plain, MD5-APR1 and bcrypt, and the controller
never has the clear password. So the users file keeps the same hashes, and this plugin
checks them with the C library's crypt(3). The file is read again whenever its mtime
changes: a mailbox added, disabled or denied CalDAV/CardDAV takes effect without a
restart. A login absent from the file (denied, disabled, unknown) gets 401.

Runs under the node's own Python with only Radicale and the standard library.
"""

import hmac
import os
import warnings

from radicale import auth

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt  # deprecated in 3.11, still what reads $6$ hashes without extra packages


class Auth(auth.BaseAuth):
    def __init__(self, configuration):
        super().__init__(configuration)
        self._filename = configuration.get("auth", "htpasswd_filename")
        self._stamp = None
        self._users = {}

    def _load(self):
        stamp = os.stat(self._filename)
        key = (stamp.st_mtime_ns, stamp.st_size, stamp.st_ino)
        if key != self._stamp:
            users = {}
            with open(self._filename, encoding="utf-8") as handle:
                for line in handle:
                    line = line.rstrip("\n")
                    if line and not line.startswith("#") and ":" in line:
                        login, hashed = line.split(":", 1)
                        users[login] = hashed
            self._users, self._stamp = users, key
        return self._users

    def login(self, login, password):
        hashed = self._load().get(login)
        if not hashed or not hashed.startswith("$6$") or not password:
            return ""
        computed = crypt.crypt(password, hashed) or ""
        return login if hmac.compare_digest(computed, hashed) else ""
