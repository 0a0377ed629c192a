// The order page: live status over Server-Sent Events, "I have paid", copy buttons, local times.
"use strict";
(function () {
  var S = JSON.parse(document.getElementById("strings").textContent);
  var box = document.getElementById("order");
  var orderId = box.dataset.orderId;
  var token = new URLSearchParams(location.search).get("token") || "";
  var lang = document.documentElement.lang;
  var TERMINAL = ["delivered", "expired", "cancelled", "rejected", "refunded"];

  function say(key, values) {
    var text = S[key] || key;
    Object.keys(values || {}).forEach(function (name) { text = text.split("{" + name + "}").join(values[name]); });
    return text;
  }

  // In the reader's zone; the date only when it is not today.
  function localTime(el) {
    var at = new Date(el.getAttribute("datetime"));
    if (isNaN(at)) return;
    el.textContent = at.toDateString() === new Date().toDateString() ? at.toLocaleTimeString(lang)
      : at.toLocaleString(lang);
    el.title = at.toLocaleString(lang);
  }

  function timeElement(iso) {
    var el = document.createElement("time");
    el.setAttribute("datetime", iso);
    el.textContent = iso;
    localTime(el);
    return el;
  }

  function money(minor, currency) {
    var places = parseInt(box.dataset.exponent, 10);
    var text = places ? (minor / Math.pow(10, places)).toFixed(places) : String(minor);
    var symbol = { CNY: "¥", USD: "$", EUR: "€", GBP: "£" }[currency];
    return symbol ? symbol + text : text + " " + currency;
  }

  function copyButton(li, code) {
    var button = li.querySelector("button.copy");
    button.hidden = false;
    button.addEventListener("click", function () {
      var done = function () {
        button.textContent = say("order.copied");
        setTimeout(function () { button.textContent = say("order.copy"); }, 1500);
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(code.textContent).then(done, function () {});
      } else {  // plain http on a phone: the old way
        var range = document.createRange();
        range.selectNodeContents(code);
        var selection = getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        if (document.execCommand("copy")) done();
      }
    });
  }

  function render(view) {
    box.dataset.status = view.status;
    var status = document.getElementById("status");
    status.textContent = S["status." + view.status] || view.status;
    status.className = "badge status-" + view.status;
    var message = document.getElementById("message");
    message.textContent = S["msg." + view.status] || "";
    message.hidden = !message.textContent;
    document.getElementById("pay").hidden = view.status !== "awaiting_payment";
    var keys = document.getElementById("keys");
    if (keys.children.length !== view.keys.length) {
      keys.textContent = "";
      view.keys.forEach(function (key) {
        var li = document.createElement("li");
        var code = document.createElement("code");
        code.textContent = key;
        var button = document.createElement("button");
        button.type = "button";
        button.className = "copy";
        button.textContent = say("order.copy");
        li.append(code, button);
        keys.append(li);
        copyButton(li, code);
      });
    }
    document.getElementById("keys-box").hidden = view.keys.length === 0;
    var coupon = document.getElementById("coupon");
    if (view.coupon) {
      var off = view.coupon.percent_off != null ? say("order.percent_off", { n: view.coupon.percent_off })
        : say("order.amount_off", { amount: money(view.coupon.amount_off_cents, view.currency) });
      coupon.textContent = say("order.coupon", {
        code: view.coupon.code, off: off, until: new Date(view.coupon.expires_at).toLocaleString(lang)
      });
    }
    coupon.hidden = !view.coupon;
    var timeline = document.getElementById("timeline");
    timeline.textContent = "";
    view.timeline.forEach(function (event) {
      if (!S["stage." + event.stage]) return;  // an internal stage (risk …): buyers see only worded ones
      var li = document.createElement("li");
      var stage = document.createElement("span");
      stage.textContent = S["stage." + event.stage];
      li.append(stage, " ", timeElement(event.at));
      timeline.append(li);
    });
    document.getElementById("live-hint").hidden = TERMINAL.indexOf(view.status) !== -1;
  }

  function refresh() {
    return fetch("/orders/" + encodeURIComponent(orderId), {
      headers: { "X-Order-Token": token, "Accept": "application/json" }, cache: "no-store"
    }).then(function (r) { return r.ok ? r.json() : null; }).then(function (view) {
      if (view) render(view);
      return view;
    }, function () { return null; });
  }

  // Live: one status event per change. If the stream is refused (too many open) or breaks for good,
  // fall back to asking every few seconds until the order settles.
  function follow() {
    var url = "/orders/" + encodeURIComponent(orderId) + "/events?token=" + encodeURIComponent(token);
    var source = new EventSource(url);
    source.addEventListener("status", function (event) {
      var status = JSON.parse(event.data).status;
      if (status !== box.dataset.status || status === "delivered") refresh();
      if (TERMINAL.indexOf(status) !== -1) source.close();
    });
    source.addEventListener("error", function () {
      if (source.readyState === EventSource.CLOSED && TERMINAL.indexOf(box.dataset.status) === -1) poll();
    });
  }

  function poll() {
    setTimeout(function () {
      refresh().then(function (view) {
        if (!view || TERMINAL.indexOf(view.status) === -1) poll();
      });
    }, 3000);
  }

  function checkPayment() {
    var button = document.getElementById("check");
    var result = document.getElementById("check-result");
    button.hidden = false;
    button.addEventListener("click", function () {
      button.disabled = true;
      result.hidden = false;
      result.textContent = say("order.checking");
      fetch("/orders/" + encodeURIComponent(orderId) + "/check-payment", {
        method: "POST", headers: { "X-Order-Token": token, "Accept": "application/json" }
      }).then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (answer) {
          if (r.status === 429) {
            result.textContent = say("err.too_many_requests", { s: r.headers.get("Retry-After") || "10" });
          } else if (r.ok) {
            result.textContent = answer.paid ? say("order.paid_seen") : say("order.not_paid_yet");
            refresh();
          } else {
            result.textContent = say("err.generic");
          }
        });
      }, function () { result.textContent = say("err.network"); }).then(function () { button.disabled = false; });
    });
  }

  document.querySelectorAll("time[datetime]").forEach(localTime);
  document.querySelectorAll("#keys li").forEach(function (li) { copyButton(li, li.querySelector("code")); });
  checkPayment();
  if (box.dataset.live === "yes") follow();
})();
