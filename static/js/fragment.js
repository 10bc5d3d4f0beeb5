/* Fragments loaded after the page: an element with data-fragment-url is filled with the
   HTML the server renders (and escapes) for that URL, so a page never waits on a slow
   source (a node) before it answers. Without JavaScript the element keeps its link to
   the same URL, which then renders as a page of its own. The browser gives up after
   data-fragment-wait milliseconds and shows data-fragment-failed next to the link. With
   data-fragment-on="click" the fragment loads when the link inside is followed instead of
   at once (a read the user asks for, like a node's log). */
(function () {
  "use strict";
  if (!window.fetch || !window.DOMParser) {
    return;
  }

  function notice(box, text, className) {
    var p = document.createElement("p");
    p.className = className;
    p.textContent = text;
    return p;
  }

  function load(box) {
    var url = box.getAttribute("data-fragment-url");
    var wait = Number(box.getAttribute("data-fragment-wait") || 60000);
    var fallback = Array.prototype.slice.call(box.childNodes);
    var controller = window.AbortController ? new AbortController() : null;
    var timer = controller ? window.setTimeout(function () { controller.abort(); }, wait) : null;
    box.setAttribute("aria-busy", "true");
    box.replaceChildren(notice(box, box.getAttribute("data-fragment-loading") || "…", "muted"));
    fetch(url, {
      credentials: "same-origin",
      headers: { Accept: "text/html", "X-Requested-With": "fetch" },
      signal: controller ? controller.signal : undefined
    })
      .then(function (response) {
        if (!response.ok) {
          throw new Error(String(response.status));
        }
        return response.text();
      })
      .then(function (html) {
        var doc = new DOMParser().parseFromString("<div>" + html + "</div>", "text/html");
        box.replaceChildren.apply(box, Array.prototype.slice.call(doc.body.firstChild.childNodes));
      })
      .catch(function () {
        var failed = notice(box, box.getAttribute("data-fragment-failed") || "", "alert alert-error");
        box.replaceChildren.apply(box, [failed].concat(fallback));
      })
      .finally(function () {
        if (timer) {
          window.clearTimeout(timer);
        }
        box.removeAttribute("aria-busy");
      });
  }

  function start() {
    Array.prototype.forEach.call(document.querySelectorAll("[data-fragment-url]"), function (box) {
      if (box.getAttribute("data-fragment-on") !== "click") {
        load(box);
        return;
      }
      var link = box.querySelector("a[href]");
      if (link) {
        link.addEventListener("click", function (event) {
          event.preventDefault();
          load(box);
        });
      }
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
