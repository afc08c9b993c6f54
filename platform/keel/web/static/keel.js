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
