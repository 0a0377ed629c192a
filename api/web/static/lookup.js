// The order lookup: one email, always the same answer (the page never lists orders).
"use strict";
(function () {
  var S = JSON.parse(document.getElementById("strings").textContent);
  var form = document.getElementById("lookup");
  var error = form.querySelector("[data-error]");
  var sent = form.querySelector("[data-sent]");
  var button = form.querySelector("button[type=submit]");
  var label = button.textContent;

  function done(message) {
    button.disabled = false;
    button.textContent = label;
    if (message) { error.textContent = message; error.hidden = false; }
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    error.hidden = true;
    sent.hidden = true;
    var email = form.elements.email.value.trim();
    if (!email) return done(S["err.email"]);
    button.disabled = true;
    button.textContent = S["lookup.sending"];
    fetch("/orders/lookup", {
      method: "POST", headers: { "Content-Type": "application/json", "Accept": "application/json" },
      body: JSON.stringify({ email: email })
    }).then(function (response) {
      if (response.status === 202) { sent.hidden = false; return done(); }
      if (response.status === 422) return done(S["err.email"]);
      if (response.status === 429) {
        return done(S["err.too_many_requests"].split("{s}").join(response.headers.get("Retry-After") || "60"));
      }
      done(S["err.generic"]);
    }, function () { done(S["err.network"]); });
  });
})();
