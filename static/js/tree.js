/* The customer tree: expand and collapse sub-customers in place, fetched on first use.
   Without JavaScript the toggles stay hidden and each name links to the customer's page,
   which lists its children. The toggles are buttons (Enter and Space work) with
   aria-expanded; rows fetched from the server are inserted as HTML the server escaped. */
(function () {
  "use strict";
  if (!window.fetch || !window.DOMParser) {
    return;
  }

  function descendants(row) {
    // Rows after `row` whose depth is greater, up to the next row at its depth or above.
    var depth = Number(row.getAttribute("data-tree-depth") || 0);
    var found = [];
    var next = row.nextElementSibling;
    while (next && next.hasAttribute("data-tree-parent")) {
      if (Number(next.getAttribute("data-tree-depth") || 0) <= depth) {
        break;
      }
      found.push(next);
      next = next.nextElementSibling;
    }
    return found;
  }

  function setExpanded(button, expanded) {
    button.setAttribute("aria-expanded", expanded ? "true" : "false");
    var label = button.getAttribute(expanded ? "data-label-collapse" : "data-label-expand");
    if (label) {
      button.setAttribute("aria-label", label);
    }
  }

  function rowsFrom(html) {
    // A <tbody> context so the parser keeps <tr> elements.
    var doc = new DOMParser().parseFromString("<table><tbody>" + html + "</tbody></table>", "text/html");
    return Array.prototype.slice.call(doc.querySelectorAll("tbody > tr"));
  }

  function expand(button, row) {
    if (button.getAttribute("data-loaded") === "true") {
      descendants(row).forEach(function (r) {
        // Show direct children; deeper rows follow their own toggles' state.
        r.hidden = !visibleUnder(r, row);
      });
      setExpanded(button, true);
      return;
    }
    button.disabled = true;
    fetch(button.getAttribute("data-tree-url"), {
      credentials: "same-origin",
      headers: { Accept: "text/html", "X-Requested-With": "fetch" }
    })
      .then(function (response) {
        if (!response.ok) {
          throw new Error(String(response.status));
        }
        return response.text();
      })
      .then(function (html) {
        var anchor = row;
        rowsFrom(html).forEach(function (newRow) {
          var adopted = document.importNode(newRow, true);
          anchor.parentNode.insertBefore(adopted, anchor.nextSibling);
          anchor = adopted;
          init(adopted);
        });
        button.setAttribute("data-loaded", "true");
        setExpanded(button, true);
      })
      .catch(function () {
        // Fall back to the customer's own page, which lists its children.
        var link = row.querySelector("a.row-link");
        if (link) {
          window.location.href = link.href;
        }
      })
      .then(function () {
        button.disabled = false;
      });
  }

  function visibleUnder(candidate, root) {
    // A row is visible when every toggle between it and `root` is expanded.
    var parentId = candidate.getAttribute("data-tree-parent");
    var rootId = root.getAttribute("data-tree-id");
    while (parentId && parentId !== rootId) {
      var parentRow = root.parentNode.querySelector('tr[data-tree-id="' + parentId + '"]');
      if (!parentRow) {
        return false;
      }
      var toggle = parentRow.querySelector(".tree-toggle");
      if (!toggle || toggle.getAttribute("aria-expanded") !== "true") {
        return false;
      }
      parentId = parentRow.getAttribute("data-tree-parent");
    }
    return true;
  }

  function collapse(button, row) {
    descendants(row).forEach(function (r) {
      r.hidden = true;
    });
    setExpanded(button, false);
  }

  function init(scope) {
    // Indentation is set here, not in a style attribute (the CSP forbids inline styles).
    var rows = scope.matches && scope.matches("tr") ? [scope] : scope.querySelectorAll("tr[data-tree-depth]");
    Array.prototype.forEach.call(rows, function (row) {
      row.style.setProperty("--tree-depth", row.getAttribute("data-tree-depth") || "0");
    });
    Array.prototype.forEach.call(scope.querySelectorAll(".tree-toggle"), function (button) {
      button.hidden = false;
    });
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest(".tree-toggle") : null;
    if (!button) {
      return;
    }
    var row = button.closest("tr");
    if (button.getAttribute("aria-expanded") === "true") {
      collapse(button, row);
    } else {
      expand(button, row);
    }
  });

  Array.prototype.forEach.call(document.querySelectorAll("[data-tree]"), init);
})();
