// The console's own script (no inline scripts: the Content-Security-Policy forbids them).
// - forms and buttons with data-confirm ask first;
// - the journey page mounts the graph editor bundle (editor/editor.js) on #journey-editor.
(function () {
  "use strict";
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var message = form.getAttribute && form.getAttribute("data-confirm");
    if (message && !window.confirm(message)) { event.preventDefault(); }
  }, true);

  function mountEditor() {
    var element = document.getElementById("journey-editor");
    if (!element) { return; }
    if (!window.LunogramJourneyEditor || typeof window.LunogramJourneyEditor.mount !== "function") {
      element.textContent = "The journey editor could not be loaded.";
      return;
    }
    window.LunogramJourneyEditor.mount(element, {
      journeyId: element.getAttribute("data-journey-id"),
      apiBase: element.getAttribute("data-api-base") || "/api/admin",
      csrfToken: element.getAttribute("data-csrf-token"),
      readOnly: element.getAttribute("data-read-only") === "true"
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", mountEditor);
  } else {
    mountEditor();
  }
})();
