<?php
/**
 * UMS glue for Roundcube. Managed by UMS (deploy/services/roundcube): local changes are
 * overwritten by the next converge.
 *
 * Reads only what converge rendered under the data folder (config "ums_data_dir"):
 *   webmail.json   {"default_product_name": "...", "domains": {"example.org":
 *                   {"imap": "ssl://10.0.0.5:993", "product_name": "...", "book": "12"}}}
 *   allowed.txt    one address per line: the mailboxes whose effective access includes
 *                  webmail (enabled mailboxes only), sorted
 *   books/<id>.json the global address book of a customer subtree
 *
 * - authenticate: the login's domain picks its IMAP node; a mailbox missing from
 *   allowed.txt (webmail denied, disabled, unknown) is refused before any IMAP attempt;
 * - startup: a logged-in session whose mailbox left allowed.txt is ended (checked again
 *   whenever the file changes); the product name follows the user's (or the host's) domain;
 * - addressbooks_list / addressbook_get: the global address book, read-only.
 */
class ums extends rcube_plugin
{
    private $dir;
    private $data;

    public function init()
    {
        $rcmail = rcmail::get_instance();
        $this->dir = rtrim((string) $rcmail->config->get('ums_data_dir', '/etc/roundcube/ums'), '/');
        $this->add_texts('localization/');
        $this->add_hook('authenticate', [$this, 'authenticate']);
        $this->add_hook('startup', [$this, 'startup']);
        $this->add_hook('addressbooks_list', [$this, 'addressbooks_list']);
        $this->add_hook('addressbook_get', [$this, 'addressbook_get']);
        $this->brand($this->current_domain());
    }

    private function data()
    {
        if ($this->data === null) {
            $raw = @file_get_contents($this->dir . '/webmail.json');
            $this->data = $raw === false ? null : json_decode($raw, true);
            if (!is_array($this->data)) {
                $this->data = ['domains' => []];
            }
        }
        return $this->data;
    }

    private function domain_info($domain)
    {
        $domains = $this->data()['domains'] ?? [];
        return is_string($domain) && isset($domains[$domain]) ? $domains[$domain] : null;
    }

    /** The user's domain when logged in, else the domain the host name belongs to. */
    private function current_domain()
    {
        $rcmail = rcmail::get_instance();
        if ($rcmail->user && $rcmail->user->ID) {
            $name = strtolower((string) $rcmail->user->get_username());
            return substr($name, strrpos($name, '@') + 1);
        }
        $host = strtolower((string) ($_SERVER['HTTP_HOST'] ?? ''));
        $host = preg_replace('/:\d+$/', '', $host);
        foreach (array_keys($this->data()['domains'] ?? []) as $domain) {
            if ($host === $domain || substr($host, -strlen($domain) - 1) === '.' . $domain) {
                return $domain;
            }
        }
        return null;
    }

    private function brand($domain)
    {
        $info = $this->domain_info($domain);
        $name = ($info['product_name'] ?? '') ?: ($this->data()['default_product_name'] ?? '');
        if ($name !== '') {
            rcmail::get_instance()->config->set('product_name', $name);
        }
    }

    private function allowed($address)
    {
        $handle = @fopen($this->dir . '/allowed.txt', 'r');
        if ($handle === false) {
            return false;  // no list: nobody (fail closed)
        }
        $found = false;
        while (($line = fgets($handle)) !== false) {
            if (rtrim($line, "\r\n") === $address) {
                $found = true;
                break;
            }
        }
        fclose($handle);
        return $found;
    }

    public function authenticate($args)
    {
        $user = strtolower(trim((string) $args['user']));
        $at = strrpos($user, '@');
        $info = $at === false ? null : $this->domain_info(substr($user, $at + 1));
        if ($info === null || empty($info['imap']) || !$this->allowed($user)) {
            // The same answer for an unknown address as for a denied one.
            $args['abort'] = true;
            $args['error'] = 'ums.nowebmail';
            return $args;
        }
        $args['user'] = $user;
        $args['host'] = $info['imap'];
        $this->brand(substr($user, $at + 1));
        return $args;
    }

    public function startup($args)
    {
        $rcmail = rcmail::get_instance();
        if (!$rcmail->user || !$rcmail->user->ID || $args['task'] === 'logout') {
            return $args;
        }
        // Converge replaces the file by a rename: a new inode whenever it changed.
        $st = @stat($this->dir . '/allowed.txt');
        $stamp = $st ? $st['ino'] . ':' . $st['mtime'] . ':' . $st['size'] : '';
        if (($_SESSION['ums_allowed_checked'] ?? null) !== $stamp) {
            if (!$this->allowed(strtolower((string) $rcmail->user->get_username()))) {
                $rcmail->kill_session();
                $rcmail->output->redirect(['_task' => 'login'], 0);
                exit;
            }
            $_SESSION['ums_allowed_checked'] = $stamp;
        }
        return $args;
    }

    private function book_file()
    {
        $info = $this->domain_info($this->current_domain());
        $book = (string) ($info['book'] ?? '');
        return preg_match('/^[0-9]+$/', $book) ? $this->dir . '/books/' . $book . '.json' : null;
    }

    public function addressbooks_list($args)
    {
        if ($this->book_file() !== null) {
            $args['sources']['ums_gal'] = [
                'id' => 'ums_gal',
                'name' => $this->gettext('globaladdressbook'),
                'readonly' => true,
                'groups' => false,
                'autocomplete' => true,
            ];
        }
        return $args;
    }

    public function addressbook_get($args)
    {
        if ($args['id'] === 'ums_gal' && ($file = $this->book_file()) !== null) {
            require_once __DIR__ . '/ums_gal.php';
            $args['instance'] = new ums_gal($file, $this->gettext('globaladdressbook'));
        }
        return $args;
    }
}
