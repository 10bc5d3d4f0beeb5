<?php
/**
 * The global address book as a read-only Roundcube address book. Managed by UMS.
 *
 * Reads books/<customer>.json rendered by converge from mail/addressbook.py (the same
 * entries the API and the vCard export serve): [{"id": "p12", "name": "...",
 * "email": "...", "kind": "person"|"group"}, ...] in address order.
 */
class ums_gal extends rcube_addressbook
{
    public $primary_key = 'ID';
    public $readonly = true;
    public $groups = false;
    public $ready = true;

    private $file;
    private $label;
    private $entries;
    private $filter;
    private $result;

    public function __construct($file, $label)
    {
        $this->file = $file;
        $this->label = $label;
        $this->ready = is_readable($file);
    }

    private function entries()
    {
        if ($this->entries === null) {
            $raw = @file_get_contents($this->file);
            $list = $raw === false ? null : json_decode($raw, true);
            $this->entries = is_array($list) ? $list : [];
        }
        return $this->entries;
    }

    private function record($entry)
    {
        $name = (string) ($entry['name'] ?? '');
        $email = (string) ($entry['email'] ?? '');
        return [
            'ID' => (string) ($entry['id'] ?? $email),
            'name' => $name !== '' ? $name : $email,
            'displayname' => $name !== '' ? $name : $email,
            'email' => [$email],
        ];
    }

    private function matching()
    {
        if ($this->filter === null) {
            return $this->entries();
        }
        $needle = $this->filter;
        return array_values(array_filter($this->entries(), function ($entry) use ($needle) {
            $text = mb_strtolower(($entry['name'] ?? '') . ' ' . ($entry['email'] ?? ''));
            foreach ((array) $needle as $word) {
                if ($word !== '' && mb_strpos($text, $word) !== false) {
                    return true;
                }
            }
            return false;
        }));
    }

    public function get_name()
    {
        return $this->label;
    }

    public function set_search_set($filter)
    {
        $this->filter = $filter;
    }

    public function get_search_set()
    {
        return $this->filter;
    }

    public function reset()
    {
        $this->filter = null;
        $this->result = null;
    }

    public function list_records($cols = null, $subset = 0, $nocount = false)
    {
        $rows = $this->matching();
        $start = $this->list_page > 0 ? ($this->list_page - 1) * $this->page_size : 0;
        $length = $subset != 0 ? abs($subset) : $this->page_size;
        if ($subset < 0) {
            $start += $this->page_size - $length;
        }
        $this->result = new rcube_result_set(count($rows), $start);
        foreach (array_slice($rows, $start, $length) as $entry) {
            $this->result->add($this->record($entry));
        }
        return $this->result;
    }

    public function search($fields, $value, $mode = 0, $select = true, $nocount = false, $required = [])
    {
        $words = [];
        foreach ((array) $value as $item) {
            $words[] = mb_strtolower(trim((string) $item));
        }
        if ($fields === $this->primary_key || $fields === 'ID') {
            $ids = array_flip(array_map('strval', (array) $value));
            $this->result = new rcube_result_set(0, 0);
            foreach ($this->entries() as $entry) {
                if (isset($ids[(string) ($entry['id'] ?? '')])) {
                    $this->result->add($this->record($entry));
                }
            }
            $this->result->count = count($this->result->records);
            return $this->result;
        }
        $this->filter = $words;
        return $select ? $this->list_records(null, 0, $nocount) : $this->count();
    }

    public function count()
    {
        return new rcube_result_set(count($this->matching()), ($this->list_page - 1) * $this->page_size);
    }

    public function get_result()
    {
        return $this->result;
    }

    public function get_record($id, $assoc = false)
    {
        foreach ($this->entries() as $entry) {
            if ((string) ($entry['id'] ?? '') === (string) $id) {
                $record = $this->record($entry);
                $this->result = new rcube_result_set(1);
                $this->result->add($record);
                return $assoc ? $record : $this->result;
            }
        }
        return false;
    }
}
