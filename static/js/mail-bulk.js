// Mailbox lists: a "select all" box for the bulk actions. Without JavaScript it stays hidden
// and each row is ticked on its own.
document.addEventListener("DOMContentLoaded", () => {
  for (const form of document.querySelectorAll("form[data-bulk]")) {
    const all = form.querySelector("input[data-select-all]");
    if (!all) continue;
    const rows = () => form.querySelectorAll('input[name="selected"]');
    all.hidden = false;
    all.addEventListener("change", () => {
      for (const box of rows()) box.checked = all.checked;
    });
  }
});
