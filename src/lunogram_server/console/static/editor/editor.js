// Placeholder journey editor: the draft graph as JSON in a textarea, saved with PUT {apiBase}/journeys/{id}/draft.
// The graph editor bundle replaces this file; it keeps the same contract:
//   window.LunogramJourneyEditor.mount(element, {journeyId, apiBase, csrfToken, readOnly})
// Requests go with the session cookie (credentials "same-origin") and X-CSRF-Token on writes.
(function () {
  "use strict";
  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) { node.setAttribute(key, attrs[key]); });
    if (text) { node.textContent = text; }
    return node;
  }
  function latestGraph(journey) {
    return journey.draft_graph || journey.live_graph || {steps: {}};
  }
  function mount(element, options) {
    var base = (options.apiBase || "/api/admin") + "/journeys/" + encodeURIComponent(options.journeyId);
    element.textContent = "";
    element.classList.add("lunogram-editor-placeholder");
    var label = el("label", {"for": "journey-graph"}, "Draft graph (JSON)");
    var area = el("textarea", {"id": "journey-graph", "class": "tall", "spellcheck": "false"});
    var status = el("p", {"role": "status", "aria-live": "polite", "class": "hint", "id": "journey-graph-status"});
    element.appendChild(label);
    element.appendChild(area);
    if (options.readOnly) {
      area.readOnly = true;
    } else {
      var save = el("button", {"type": "button", "class": "primary", "id": "journey-graph-save"}, "Save draft");
      save.addEventListener("click", function () {
        var graph;
        try { graph = JSON.parse(area.value); } catch (error) { status.textContent = "Not valid JSON: " + error.message; return; }
        status.textContent = "Saving…";
        fetch(base + "/draft", {
          method: "PUT", credentials: "same-origin",
          headers: {"Content-Type": "application/json", "X-CSRF-Token": options.csrfToken},
          body: JSON.stringify({graph: graph})
        }).then(function (response) {
          return response.json().then(function (body) { return {ok: response.ok, body: body}; });
        }).then(function (result) {
          status.textContent = result.ok ? "Draft saved (version " + result.body.latest_version + ")." :
            "Not saved: " + (result.body.detail || result.body.title || "error");
          if (result.ok) { element.dispatchEvent(new CustomEvent("lunogram:draft-saved", {bubbles: true})); }
        }, function (error) { status.textContent = "Not saved: " + error; });
      });
      element.appendChild(save);
    }
    element.appendChild(status);
    fetch(base, {credentials: "same-origin"}).then(function (response) { return response.json(); }).then(function (journey) {
      area.value = JSON.stringify(latestGraph(journey), null, 2);
      status.textContent = options.readOnly ? "Read only." : "Loaded.";
    }, function (error) { status.textContent = "Could not load the journey: " + error; });
  }
  window.LunogramJourneyEditor = {mount: mount};
})();
