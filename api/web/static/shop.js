// The storefront: checkout through the JSON API, live stock, search as you type.
"use strict";
(function () {
  var S = JSON.parse(document.getElementById("strings").textContent);

  function say(key, values) {
    var text = S[key] || S["err.generic"];
    Object.keys(values || {}).forEach(function (name) { text = text.split("{" + name + "}").join(values[name]); });
    return text;
  }

  // A fresh key per submission: a double click or a retried request is one order.
  function newKey() {
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  // A random id for this browser, kept in its storage: the risk rules' device (a new device buying
  // much is held for review). No fingerprinting: a buyer who clears storage is simply a new device.
  function deviceId() {
    try {
      var id = localStorage.getItem("miaofa-device");
      if (!id) { id = newKey(); localStorage.setItem("miaofa-device", id); }
      return id;
    } catch (e) {
      return null;  // storage refused (private mode): no device header
    }
  }

  // The same words as describe() in api/routes/web.py.
  function describe(code, detail, retryAfter, max) {
    if (code === "invalid_input") {
      var field = String(detail || "").split(":")[0].trim();
      if (field === "email") return say("err.email");
      if (field === "quantity") return say("err.quantity", { max: max });
      return say("err.invalid_input", { detail: detail });
    }
    if (code === "too_many_requests") return say("err.too_many_requests", { s: retryAfter || "60" });
    if (code === "busy") return say("err.busy", { s: retryAfter || "2" });
    if (code === "unavailable" || code === "order_timeout" || code === "temporal_unavailable") return say("err.unavailable");
    return S["err." + code] ? say("err." + code) : say("err.generic");
  }

  function checkout(form) {
    var error = form.querySelector("[data-error]");
    var button = form.querySelector("button[type=submit]");
    var label = button.textContent;
    function fail(message, keepKey) {
      error.textContent = message;
      error.hidden = false;
      button.disabled = false;
      button.textContent = label;
      // After a refusal the next submission is a new attempt; after a lost answer it is the same one.
      if (!keepKey) form.dataset.key = "";
    }
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (button.disabled) return;
      error.hidden = true;
      var data = new FormData(form);
      var body = {
        sku: data.get("sku"), email: String(data.get("email") || "").trim(),
        quantity: parseInt(data.get("quantity"), 10), gateway: data.get("gateway"),
        lang: document.documentElement.lang.slice(0, 2)  // the emails speak the page's language
      };
      var merchant = data.get("merchant");
      if (merchant) body.merchant = merchant;
      if (!body.email) return fail(say("err.email"));
      var max = parseInt(form.dataset.max, 10);
      if (!(body.quantity >= 1 && body.quantity <= max)) return fail(say("err.quantity", { max: max }));
      var coupon = String(data.get("coupon_code") || "").trim();
      if (coupon) body.coupon_code = coupon;
      form.dataset.key = form.dataset.key || newKey();
      button.disabled = true;
      button.textContent = say("shop.placing");
      var headers = { "Content-Type": "application/json", "Accept": "application/json", "Idempotency-Key": form.dataset.key };
      var device = deviceId();
      if (device) headers["X-Device-Id"] = device;
      fetch("/orders", {
        method: "POST", credentials: "same-origin", headers: headers,
        body: JSON.stringify(body)
      }).then(function (response) {
        return response.json().catch(function () { return {}; }).then(function (answer) {
          if ((response.status === 201 || response.status === 202) && answer.access_token) {
            location.assign("/o/" + encodeURIComponent(answer.order_id) + "?token=" + encodeURIComponent(answer.access_token));
          } else if (response.status === 200) {
            fail(say("shop.replayed"));
          } else {
            fail(describe(answer.error, answer.detail, response.headers.get("Retry-After"), max),
                 response.status >= 500);
          }
        });
      }, function () { fail(say("err.network"), true); });
    });
  }

  function showStock(item, available) {
    var stock = item.querySelector("[data-stock]");
    stock.textContent = available > 0 ? say("shop.in_stock", { n: available }) : say("shop.sold_out");
    item.classList.toggle("soldout", available <= 0);
    var button = item.querySelector("button[type=submit]");
    if (button && button.textContent !== say("shop.placing")) button.disabled = available <= 0;
  }

  function refreshStock() {
    if (document.hidden) return;
    var shop = document.body.dataset.merchant;
    var url = shop ? "/products?merchant=" + encodeURIComponent(shop) : "/products";
    fetch(url, { headers: { "Accept": "application/json" } }).then(function (r) {
      return r.ok ? r.json() : [];
    }).then(function (products) {
      products.forEach(function (p) {
        var item = document.querySelector('.product[data-sku="' + CSS.escape(p.sku) + '"]');
        if (item) showStock(item, p.available);
      });
    }, function () {});
  }

  function search(input) {
    var noMatch = document.getElementById("no-match");
    input.addEventListener("input", function () {
      var needle = input.value.trim().toLowerCase();
      var shown = 0;
      document.querySelectorAll(".product").forEach(function (item) {
        var match = !needle || item.dataset.search.indexOf(needle) !== -1;
        item.hidden = !match;
        if (match) shown += 1;
      });
      noMatch.hidden = shown > 0;
    });
  }

  document.querySelectorAll("form.checkout").forEach(checkout);
  var input = document.getElementById("search");
  if (input) search(input);
  setInterval(refreshStock, 5000);
})();
