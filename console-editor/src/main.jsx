// The bundle's entry: window.LunogramJourneyEditor.mount(element, options) renders the editor into
// `element` and returns {unmount}. Options: journeyId (required), apiBase ("/api/admin"), csrfToken (sent
// as X-CSRF-Token on every change), readOnly, apiKey (a secret key sent as a bearer token, for pages outside
// the console), pollSeconds (how often the live counts refresh; 5, 0 for never).
import { createRoot } from "react-dom/client";
import "@xyflow/react/dist/style.css";
import "./editor.css";
import { Editor } from "./Editor.jsx";

export function mount(element, options = {}) {
  if (!element) throw new Error("LunogramJourneyEditor.mount: no element given");
  if (!options.journeyId) throw new Error("LunogramJourneyEditor.mount: journeyId is required");
  const root = createRoot(element);
  root.render(
    <Editor
      journeyId={options.journeyId}
      apiBase={options.apiBase || "/api/admin"}
      csrfToken={options.csrfToken || null}
      apiKey={options.apiKey || null}
      readOnly={Boolean(options.readOnly)}
      pollSeconds={options.pollSeconds ?? 5}
    />,
  );
  return { unmount: () => root.unmount() };
}
