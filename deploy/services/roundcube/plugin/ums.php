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
 *   totp.json      {"address": "BASE32SEED"}: mailboxes with two-factor webmail login
 *
 * - authenticate: the login's domain picks its IMAP node; a mailbox missing from
 *   allowed.txt (webmail denied, disabled, unknown) is refused before any IMAP attempt;
 * - startup: a logged-in session whose mailbox left allowed.txt is ended (checked again
 *   whenever the file changes); the product name follows the user's (or the host's) domain;
 * - addressbooks_list / addressbook_get: the global address book, read-only;
 * - loginform_content / login_after: a one-time code field on the login form; a mailbox
 *   with a TOTP seed must give the current code (RFC 6238, one step of drift, never the
 *   same or an older step twice) or its fresh session is ended. The code is checked
 *   after the password, so only someone who knows the password learns that a code is
 *   required.
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
        $this->add_hook('loginform_content', [$this, 'loginform_content']);
        $this->add_hook('login_after', [$this, 'login_after']);
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

    public function loginform_content($args)
    {
        $input = new html_inputfield([
            'name' => '_totp',
            'id' => 'rcmlogintotp',
            'size' => 10,
            'autocomplete' => 'one-time-code',
            'inputmode' => 'numeric',
            'placeholder' => $this->gettext('onetimecode'),
        ]);
        $args['inputs']['totp'] = [
            'title' => html::label('rcmlogintotp', rcube::Q($this->gettext('onetimecode'))),
            'content' => $input->show(),
        ];
        return $args;
    }

    private function totp_secret($address)
    {
        $raw = @file_get_contents($this->dir . '/totp.json');
        $seeds = $raw === false ? null : json_decode($raw, true);
        return is_array($seeds) && isset($seeds[$address]) ? (string) $seeds[$address] : null;
    }

    private static function base32_decode($text)
    {
        $alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
        $bits = '';
        foreach (str_split(strtoupper(rtrim($text, '='))) as $char) {
            $value = strpos($alphabet, $char);
            if ($value === false) {
                return null;
            }
            $bits .= str_pad(decbin($value), 5, '0', STR_PAD_LEFT);
        }
        $bytes = '';
        foreach (str_split($bits, 8) as $byte) {
            if (strlen($byte) === 8) {
                $bytes .= chr(bindec($byte));
            }
        }
        return $bytes;
    }

    private static function hotp($key, $counter)
    {
        $hash = hash_hmac('sha1', pack('J', $counter), $key, true);
        $offset = ord($hash[19]) & 0x0f;
        $value = ((ord($hash[$offset]) & 0x7f) << 24) | (ord($hash[$offset + 1]) << 16)
            | (ord($hash[$offset + 2]) << 8) | ord($hash[$offset + 3]);
        return str_pad((string) ($value % 1000000), 6, '0', STR_PAD_LEFT);
    }

    /** The time step the code belongs to (current one and one either side), or null. */
    private static function totp_step($secret, $code)
    {
        $code = preg_replace('/[\s-]/', '', (string) $code);
        $key = self::base32_decode($secret);
        if ($key === null || !preg_match('/^[0-9]{6}$/', $code)) {
            return null;
        }
        $now = intdiv(time(), 30);
        $found = null;
        for ($step = $now - 1; $step <= $now + 1; $step++) {
            if (hash_equals(self::hotp($key, $step), $code)) {
                $found = $step;
            }
        }
        return $found;
    }

    public function login_after($args)
    {
        $rcmail = rcmail::get_instance();
        $address = strtolower((string) $rcmail->user->get_username());
        $secret = $this->totp_secret($address);
        if ($secret === null) {
            return $args;
        }
        $step = self::totp_step($secret, rcube_utils::get_input_string('_totp', rcube_utils::INPUT_POST));
        $prefs = $rcmail->user->get_prefs();
        if ($step !== null && $step > (int) ($prefs['ums_totp_step'] ?? 0)) {
            $rcmail->user->save_prefs(['ums_totp_step' => $step]);
            return $args;
        }
        $rcmail->kill_session();
        $rcmail->output->show_message('ums.badcode', 'warning');
        $rcmail->output->send('login');
        exit;
    }
}
