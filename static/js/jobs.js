/* Live progress for a job page: polls the job's status URL until it finishes.
   Without JavaScript the page still shows the state at load time (reload to refresh). */
(function () {
  "use strict";
  var card = document.querySelector("[data-job-status-url]");
  if (!card || card.getAttribute("data-job-finished") === "true" || !window.fetch) {
    return;
  }
  var url = card.getAttribute("data-job-status-url");
  var progress = card.querySelector("progress");

  function setField(name, value) {
    var nodes = document.querySelectorAll('[data-job-field="' + name + '"]');
    Array.prototype.forEach.call(nodes, function (node) {
      node.textContent = value;  // textContent: log lines are shown, never interpreted
      if (name === "error") {
        node.hidden = !value;
      }
    });
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) {
        if (!data) {
          return;
        }
        progress.value = data.percent;
        ["statusLabel", "percent", "done", "total", "log", "error"].forEach(function (key) {
          setField(key, data[key]);
        });
        if (data.finished) {
          card.setAttribute("data-job-finished", "true");
          window.location.reload();
          return;
        }
        window.setTimeout(poll, 1000);
      })
      .catch(function () { window.setTimeout(poll, 3000); });
  }
  window.setTimeout(poll, 500);
})();
