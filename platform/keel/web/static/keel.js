// Keel pages' only script (a Content-Security-Policy forbids inline ones). A form with conditional
// fields is re-rendered by the server when a value changes, so the server's own evaluation of
// `visible_if` decides what is shown: the browser never evaluates a definition's expression.
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    var forms = document.querySelectorAll("form[data-conditional]");
    Array.prototype.forEach.call(forms, function (form) {
      var refresh = form.querySelector("button.refresh");
      if (!refresh) { return; }
      var depends = (form.getAttribute("data-depends") || "").split(" ");
      refresh.hidden = true;  // with the script, updating happens on change
      form.addEventListener("change", function (event) {
        var target = event.target;
        if (!target || depends.indexOf(target.name) < 0) { return; }
        if (form.requestSubmit) { form.requestSubmit(refresh); } else { refresh.click(); }
      });
    });
  });
})();

// Type-ahead for link and user fields and filters: a <select data-picker="URL"> keeps the value the form
// sends (and works without this script, with the options the server listed); with it, a search box asks
// URL?q=... (keel.web.pickers, JSON) as the user types and lists every match, not only a capped few.
(function () {
  "use strict";
  function setValue(select, id, label) {
    var found = null;
    Array.prototype.forEach.call(select.options, function (o) { if (o.value === String(id)) { found = o; } });
    if (!found) { found = new Option(label, id); select.add(found); }
    select.value = String(id);
    select.dispatchEvent(new Event("change", { bubbles: true }));
  }
  function attach(select) {
    var url = select.getAttribute("data-picker");
    var box = document.createElement("div");
    box.className = "picker";
    var input = document.createElement("input");
    input.type = "search";
    input.autocomplete = "off";
    input.setAttribute("role", "combobox");
    input.setAttribute("aria-expanded", "false");
    if (select.id) { input.id = select.id + "-search"; }
    var label = select.id ? document.querySelector("label[for='" + select.id + "']") : null;
    if (label) { label.setAttribute("for", input.id); }
    var chosen = select.selectedOptions && select.selectedOptions[0];
    input.value = chosen && chosen.value ? chosen.text : "";
    input.placeholder = select.options[0] ? select.options[0].text : "";
    var list = document.createElement("ul");
    list.className = "picker-results";
    list.setAttribute("role", "listbox");
    list.hidden = true;
    box.appendChild(input);
    box.appendChild(list);
    select.parentNode.insertBefore(box, select);
    select.hidden = true;
    var timer = null, asked = 0;
    function show(items) {
      list.innerHTML = "";
      items.forEach(function (item) {
        var li = document.createElement("li");
        li.setAttribute("role", "option");
        li.tabIndex = -1;
        li.textContent = item.label;
        if (item.detail) {
          var small = document.createElement("span");
          small.className = "muted small";
          small.textContent = " " + item.detail;
          li.appendChild(small);
        }
        li.addEventListener("mousedown", function (e) {
          e.preventDefault();
          setValue(select, item.id, item.label);
          input.value = item.label;
          list.hidden = true;
          input.setAttribute("aria-expanded", "false");
        });
        list.appendChild(li);
      });
      list.hidden = items.length === 0;
      input.setAttribute("aria-expanded", items.length ? "true" : "false");
    }
    function ask() {
      var n = ++asked;
      fetch(url + (url.indexOf("?") < 0 ? "?" : "&") + "q=" + encodeURIComponent(input.value.trim()),
            { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { return r.ok ? r.json() : { items: [] }; })
        .then(function (data) { if (n === asked) { show(data.items || []); } })
        .catch(function () { /* offline: the select still holds the value */ });
    }
    input.addEventListener("input", function () {
      if (!input.value.trim()) { select.value = ""; }
      clearTimeout(timer);
      timer = setTimeout(ask, 180);
    });
    input.addEventListener("focus", ask);
    input.addEventListener("blur", function () { setTimeout(function () { list.hidden = true; }, 150); });
  }
  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("select[data-picker]"), attach);
  });
})();
