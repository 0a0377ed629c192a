// The key import: reads the chosen file here, sends it in chunks of 200 lines (at most ~48 KB each,
// under the API's body limit) with the form's CSRF token in a header, and moves the bar per chunk.
(function () {
  "use strict";
  var form = document.getElementById("import");
  if (!form) return;
  var bar = document.getElementById("import-bar");
  var status = document.getElementById("import-status");
  var LINES = 200, BYTES = 48 * 1024;

  function fill(template, counts) {
    return template.replace("{imported}", counts.imported).replace("{duplicates}", counts.duplicates)
      .replace("{detail}", counts.detail || "");
  }

  function chunks(lines) {
    var out = [], current = [], size = 0;
    lines.forEach(function (line) {
      var bytes = new Blob([line]).size + 1;
      if (current.length && (current.length >= LINES || size + bytes > BYTES)) {
        out.push(current); current = []; size = 0;
      }
      current.push(line); size += bytes;
    });
    if (current.length) out.push(current);
    return out;
  }

  async function send(parts) {
    var totals = { imported: 0, duplicates: 0 };
    for (var i = 0; i < parts.length; i++) {
      var answer = await fetch(form.dataset.url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "text/plain; charset=utf-8", "X-CSRF-Token": form.dataset.csrf,
          "Accept": "application/json" },
        body: parts[i].join("\n")
      });
      var body = await answer.json().catch(function () { return { detail: String(answer.status) }; });
      if (!answer.ok) throw new Error(body.detail || String(answer.status));
      totals.imported += body.imported; totals.duplicates += body.duplicates;
      bar.value = Math.round(((i + 1) / parts.length) * 100);
      status.textContent = fill(form.dataset.progress, totals);
    }
    return totals;
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    var file = document.getElementById("key-file").files[0];
    if (!file) { status.textContent = form.dataset.pick; return; }
    var button = form.querySelector("button[type=submit]");
    button.disabled = true; bar.value = 0;
    try {
      var lines = (await file.text()).split(/\r\n|\r|\n/).map(function (l) { return l.trim(); })
        .filter(function (l) { return l.length > 0; });
      var totals = await send(chunks(lines));
      bar.value = 100;
      status.textContent = fill(form.dataset.done, totals);
      status.dataset.state = "done";
      var available = document.querySelector('[data-count="available"]');
      if (available) available.textContent = String(Number(available.textContent) + totals.imported);
    } catch (error) {
      status.textContent = fill(form.dataset.failed, { imported: 0, duplicates: 0, detail: error.message });
      status.dataset.state = "failed";
    } finally {
      button.disabled = false;
    }
  });
})();
