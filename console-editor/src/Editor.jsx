// The journey editor: palette, graph, side panel and toolbar over the admin API. The draft is edited
// locally and saved whole (PUT /journeys/{id}/draft, positions in x/y); the server's problems (a refused
// save, POST .../validate) are placed on the steps; published versions are shown read-only; counts, a
// user's path and the dry run are drawn over whichever version is shown.
import { Component, useCallback, useEffect, useMemo, useRef, useState } from "react";
import {
  applyNodeChanges,
  Background,
  Controls,
  MiniMap,
  ReactFlow,
  ReactFlowProvider,
  useReactFlow,
} from "@xyflow/react";
import { ApiError, makeApi } from "./api.js";
import { edgesOf, graphOf, nodesOf, saveProblems, stepsOf, validateProblems } from "./graph.js";
import { Panel } from "./Panel.jsx";
import { StepNode } from "./StepNode.jsx";
import { canEnter, freshKey, PALETTE, PALETTE_BY_ID, removeSteps, renameStep, withExit } from "./steps.js";

const NODE_TYPES = { step: StepNode };
const DRAG_TYPE = "application/x-lunogram-step";
const NO_PROBLEMS = { byStep: {}, general: [] };
const MINIMAP_COLORS = { entrance: "#2454c5", goal: "#1d6b38", exit: "#5b6474", condition: "#7b2cbf", split: "#7b2cbf" };
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function Editor(props) {
  return (
    <Guard>
      <ReactFlowProvider>
        <EditorInner {...props} />
      </ReactFlowProvider>
    </Guard>
  );
}

// A graph the editor cannot draw says so instead of leaving an empty box.
class Guard extends Component {
  constructor(props) {
    super(props);
    this.state = { error: null };
  }

  static getDerivedStateFromError(error) {
    return { error };
  }

  render() {
    if (this.state.error) {
      return (
        <div className="lje-root lje-failed" role="alert">
          The editor stopped: {String(this.state.error.message || this.state.error)}. Reload the page; unsaved changes are
          lost.
        </div>
      );
    }
    return this.props.children;
  }
}

function EditorInner({ journeyId, apiBase, csrfToken, apiKey, readOnly: forcedReadOnly, pollSeconds }) {
  const api = useMemo(() => makeApi({ apiBase, csrfToken, apiKey }), [apiBase, csrfToken, apiKey]);
  const flow = useReactFlow();
  const [journey, setJourney] = useState(null);
  const [loadError, setLoadError] = useState(null);
  // the documents shown: "draft" (editable) and published versions by number (read-only)
  const [docs, setDocs] = useState({});
  const [view, setView] = useState("draft");
  const [dirty, setDirty] = useState(false);
  const [problems, setProblems] = useState(NO_PROBLEMS);
  const [stats, setStats] = useState(null);
  const [showCounts, setShowCounts] = useState(true);
  const [trail, setTrail] = useState(null);
  const [message, setMessage] = useState(null);
  const [busy, setBusy] = useState(false);
  const [tab, setTab] = useState("journey");
  const [selectedEdges, setSelectedEdges] = useState(new Set());
  const [options, setOptions] = useState({ lists: [], templates: [], journeys: [], journeyId });
  const revision = useRef(0);
  const wrapper = useRef(null);

  const doc = docs[view];
  const steps = doc?.steps || {};
  const nodes = doc?.nodes || [];
  const editable = view === "draft" && !forcedReadOnly && journey?.status !== "archived";

  const say = (kind, text) => setMessage({ kind, text, at: Date.now() });

  // -- loading --------------------------------------------------------------------------------------------

  const loadStats = useCallback(async () => {
    try {
      setStats(await api.stats(journeyId));
    } catch {
      // counts are a nicety: a failed refresh keeps the last ones
    }
  }, [api, journeyId]);

  const runValidate = useCallback(
    async (draftSteps) => {
      const result = await api.validate(journeyId);
      setProblems(validateProblems(result.problems, draftSteps));
      return result;
    },
    [api, journeyId],
  );

  useEffect(() => {
    let gone = false;
    (async () => {
      try {
        const found = await api.journey(journeyId);
        if (gone) return;
        setJourney(found);
        const graph = found.draft_graph || found.live_graph;
        const draftSteps = stepsOf(graph);
        const initial = { draft: { steps: draftSteps, nodes: nodesOf(draftSteps) } };
        if (forcedReadOnly && found.live_version) {
          const liveSteps = stepsOf(found.live_graph);
          initial[found.live_version] = { steps: liveSteps, nodes: nodesOf(liveSteps) };
          setView(found.live_version);
        }
        setDocs(initial);
        loadStats();
        if (found.draft_graph && !forcedReadOnly) runValidate(draftSteps).catch(() => {});
      } catch (err) {
        if (!gone) setLoadError(err.message);
      }
    })();
    Promise.allSettled([api.lists(), api.templates(), api.journeys()]).then(([lists, templates, journeys]) => {
      if (gone) return;
      setOptions({
        journeyId,
        lists: lists.status === "fulfilled" ? lists.value : [],
        templates: templates.status === "fulfilled" ? templates.value : [],
        journeys: journeys.status === "fulfilled" ? journeys.value : [],
      });
    });
    return () => {
      gone = true;
    };
  }, [api, journeyId, forcedReadOnly, loadStats, runValidate]);

  useEffect(() => {
    if (!journey || !journey.live_version || !pollSeconds) return undefined;
    const timer = setInterval(() => {
      if (document.visibilityState !== "hidden") loadStats();
    }, pollSeconds * 1000);
    return () => clearInterval(timer);
  }, [journey, pollSeconds, loadStats]);

  useEffect(() => {
    if (!dirty) return undefined;
    const warn = (event) => {
      event.preventDefault();
      event.returnValue = "";
    };
    window.addEventListener("beforeunload", warn);
    return () => window.removeEventListener("beforeunload", warn);
  }, [dirty]);

  // -- editing --------------------------------------------------------------------------------------------

  const updateDoc = useCallback(
    (fn) => {
      setDocs((all) => {
        const current = all[view];
        if (!current) return all;
        return { ...all, [view]: fn(current) };
      });
    },
    [view],
  );

  const edit = useCallback(
    (fn) => {
      if (!editable) return;
      revision.current += 1;
      setDirty(true);
      updateDoc(fn);
    },
    [editable, updateDoc],
  );

  const onNodesChange = useCallback(
    (changes) => {
      const removed = changes.filter((c) => c.type === "remove").map((c) => c.id);
      const moved = changes.some((c) => c.type === "position" && c.dragging === false);
      const kept = changes.filter((c) => c.type !== "remove");
      if (removed.length && editable) {
        edit((d) => ({
          steps: removeSteps(d.steps, removed),
          nodes: applyNodeChanges(kept, d.nodes.filter((n) => !removed.includes(n.id))),
        }));
        return;
      }
      if (moved && editable) {
        revision.current += 1;
        setDirty(true);
      }
      updateDoc((d) => ({ ...d, nodes: applyNodeChanges(kept, d.nodes) }));
    },
    [edit, editable, updateDoc],
  );

  const onEdgesChange = useCallback(
    (changes) => {
      setSelectedEdges((prev) => {
        const next = new Set(prev);
        for (const c of changes) {
          if (c.type === "select") {
            if (c.selected) next.add(c.id);
            else next.delete(c.id);
          } else if (c.type === "remove") next.delete(c.id);
        }
        return next;
      });
      const removed = changes.filter((c) => c.type === "remove");
      if (removed.length && editable) {
        edit((d) => {
          const out = { ...d.steps };
          for (const c of removed) {
            const [source, handle] = c.id.split(":");
            if (out[source]) out[source] = withExit(out[source], handle, null);
          }
          return { ...d, steps: out };
        });
      }
    },
    [edit, editable],
  );

  const onConnect = useCallback(
    ({ source, sourceHandle, target }) => {
      edit((d) => ({ ...d, steps: { ...d.steps, [source]: withExit(d.steps[source], sourceHandle, target) } }));
    },
    [edit],
  );

  const isValidConnection = useCallback(
    ({ target }) => Boolean(steps[target]) && canEnter(steps[target]),
    [steps],
  );

  const addStep = useCallback(
    (paletteId, position) => {
      const item = PALETTE_BY_ID[paletteId];
      if (!item || !editable) return;
      let at = position;
      if (!at) {
        const box = wrapper.current.getBoundingClientRect();
        at = freeSpot(nodes, flow.screenToFlowPosition({ x: box.left + box.width / 2 - 100, y: box.top + 40 }));
      }
      const step = item.make();
      edit((d) => {
        const key = freshKey(step.type, d.steps);
        return {
          steps: { ...d.steps, [key]: step },
          nodes: [
            ...d.nodes.map((n) => (n.selected ? { ...n, selected: false } : n)),
            { id: key, type: "step", position: { x: Math.round(at.x), y: Math.round(at.y) }, data: {}, selected: true },
          ],
        };
      });
      setTab("step");
    },
    [edit, editable, flow, nodes],
  );

  const onDrop = useCallback(
    (event) => {
      const id = event.dataTransfer.getData(DRAG_TYPE);
      if (!id) return;
      event.preventDefault();
      addStep(id, flow.screenToFlowPosition({ x: event.clientX, y: event.clientY }));
    },
    [addStep, flow],
  );

  const selectedKey = nodes.find((n) => n.selected)?.id;
  useEffect(() => {
    if (selectedKey) setTab("step");
  }, [selectedKey]);

  // -- saving, validating, publishing ----------------------------------------------------------------------

  async function save() {
    const draft = docs.draft;
    const at = revision.current;
    const graph = graphOf(draft.steps, draft.nodes);
    try {
      const saved = await api.saveDraft(journeyId, graph);
      setJourney(saved);
      if (revision.current === at) {
        setDirty(false);
        // the server's form of the graph (defaults filled in), positions as the nodes have them
        const savedSteps = stepsOf(saved.draft_graph);
        setDocs((all) => ({ ...all, draft: { ...all.draft, steps: savedSteps } }));
      }
      const checked = await runValidate(draft.steps);
      return { saved: true, valid: checked.valid };
    } catch (err) {
      if (err instanceof ApiError && err.status === 400) {
        const found = saveProblems(err.problem, draft.steps);
        setProblems(found);
        const onSteps = Object.keys(found.byStep).length;
        say(
          "error",
          onSteps
            ? `Not saved: ${onSteps} step(s) need fixing (marked on the graph; see Problems).`
            : `Not saved: ${err.message}`,
        );
        return { saved: false };
      }
      throw err;
    }
  }

  async function act(what, fn) {
    setBusy(true);
    try {
      await fn();
    } catch (err) {
      say("error", `${what}: ${err.message}`);
    } finally {
      setBusy(false);
    }
  }

  const onSave = () =>
    act("Save", async () => {
      const result = await save();
      if (result.saved) {
        say(result.valid ? "ok" : "warn", result.valid ? "Draft saved. No problems." : "Draft saved, with problems to fix before publishing.");
      }
    });

  const onValidate = () =>
    act("Validate", async () => {
      if (dirty) {
        const result = await save();
        if (!result.saved) return;
      }
      const result = await runValidate(docs.draft.steps);
      say(result.valid ? "ok" : "warn", result.valid ? "No problems: ready to publish." : `${result.problems.length} problem(s) to fix.`);
      if (!result.valid) setTab("problems");
    });

  const onPublish = () =>
    act("Publish", async () => {
      if (!dirty && !journey.draft_graph) {
        say("warn", `Nothing new to publish: version ${journey.live_version} is live and there is no draft.`);
        return;
      }
      // saving first: what is published is what is on screen
      const result = await save();
      if (!result.saved) return;
      if (!result.valid) {
        say("error", "Not published: fix the problems shown on the steps first.");
        setTab("problems");
        return;
      }
      const published = await api.publish(journeyId);
      setJourney(published);
      setProblems(NO_PROBLEMS);
      say("ok", `Published version ${published.live_version}.`);
      loadStats();
    });

  const onStatus = (action) =>
    act(action === "pause" ? "Pause" : "Resume", async () => {
      const changed = await (action === "pause" ? api.pause(journeyId) : api.resume(journeyId));
      setJourney(changed);
      say("ok", changed.status === "paused" ? "Paused: nothing enters, runs stand still." : "Resumed.");
    });

  async function showVersion(value) {
    if (value === "draft") {
      setView("draft");
      return;
    }
    const version = Number(value);
    if (!docs[version]) {
      try {
        const graph = version === journey.live_version ? journey.live_graph : (await api.version(journeyId, version)).graph;
        const vSteps = stepsOf(graph);
        setDocs((all) => ({ ...all, [version]: { steps: vSteps, nodes: nodesOf(vSteps) } }));
      } catch (err) {
        say("error", `Version ${version}: ${err.message}`);
        return;
      }
    }
    setView(version);
  }

  // -- a user's path and the dry run --------------------------------------------------------------------------

  async function findUser(text) {
    const value = text.trim();
    if (UUID.test(value)) {
      try {
        return await api.userById(value);
      } catch (err) {
        if (!(err instanceof ApiError && err.status === 404)) throw err;
      }
    }
    return api.userByExternalId(value);
  }

  async function showUserPath(text, runIndex = 0) {
    const user = await findUser(text);
    const runs = (await api.userRuns(user.id)).filter((r) => r.journey_id === journeyId);
    if (!runs.length) {
      setTrail(null);
      say("warn", `${text} has no run in this journey.`);
      return;
    }
    const run = runs[Math.min(runIndex, runs.length - 1)];
    setTrail({
      kind: "user",
      label: `${text}: run ${run.id.slice(0, 8)} (version ${run.version}, ${run.status})`,
      user: text,
      version: run.version,
      runs,
      runIndex: Math.min(runIndex, runs.length - 1),
      end: run.status,
      error: run.error,
      entries: run.steps.map((s, n) => ({ step: s.step, outcome: s.outcome, detail: s.detail, order: n + 1 })),
    });
    say("ok", `Showing the path of ${text} (${runs.length} run${runs.length > 1 ? "s" : ""} in this journey).`);
  }

  async function simulate(text, eventText, entrance) {
    const user = await findUser(text);
    const first = user.identifier?.[0];
    if (!first) throw new Error("this user has no external id to simulate with");
    const body = { identifier: [{ source: first.source, external_id: first.external_id }] };
    if (eventText.trim()) {
      const event = JSON.parse(eventText);
      if (!event || typeof event !== "object" || Array.isArray(event)) throw new Error("event: must be a JSON object");
      body.event = event;
    }
    if (entrance) body.entrance = entrance;
    const result = await api.simulate(journeyId, body);
    setTrail({
      kind: "sim",
      label: `Dry run for ${text} on version ${result.version}: ends ${result.end}`,
      user: text,
      version: result.version,
      end: result.end,
      entries: result.path.map((s, n) => ({ step: s.step, outcome: s.outcome, detail: s.detail, order: n + 1 })),
    });
    say("ok", `Dry run for ${text}: ${result.path.length} step(s), ends ${result.end}. Nothing was changed.`);
  }

  // -- what is drawn --------------------------------------------------------------------------------------------

  const names = useMemo(() => {
    const byId = (items) => Object.fromEntries(items.map((i) => [i.id, i.name]));
    const lists = byId(options.lists);
    const templates = byId(options.templates);
    const journeys = byId(options.journeys);
    const name = (table, noun) => (id) => (id ? (table[id] ? `"${table[id]}"` : `${noun} ${String(id).slice(0, 8)}`) : `no ${noun} yet`);
    return { list: name(lists, "list"), template: name(templates, "template"), journey: name(journeys, "journey") };
  }, [options]);

  const countsVersion = view === "draft" ? journey?.live_version : view;
  const versionStats = stats && countsVersion ? stats[String(countsVersion)] : null;

  const trailByStep = useMemo(() => {
    const out = {};
    for (const e of trail?.entries || []) (out[e.step] ||= []).push({ ...e, kind: trail.kind, label: trail.label });
    return out;
  }, [trail]);
  const trailPairs = useMemo(() => {
    const pairs = new Set();
    const entries = trail?.entries || [];
    for (let n = 1; n < entries.length; n += 1) pairs.add(`${entries[n - 1].step}>${entries[n].step}`);
    return pairs;
  }, [trail]);

  const countedSteps = view === "draft" ? journey?.live_graph?.steps || {} : steps;
  const countsOf = useCallback(
    (key) => {
      if (!versionStats || !(key in countedSteps)) return null;
      const outcomes = versionStats.outcomes?.[key];
      return {
        version: countsVersion,
        through: versionStats.through_step?.[key] || 0,
        inStep: versionStats.in_step?.[key] || 0,
        outcomes: outcomes ? Object.entries(outcomes).map(([o, n]) => `${o}: ${n}`).join(", ") : "",
      };
    },
    [versionStats, countsVersion, countedSteps],
  );

  const shownProblems = view === "draft" ? problems : NO_PROBLEMS;
  const rfNodes = useMemo(
    () =>
      nodes.map((n) => ({
        ...n,
        ariaLabel: `step ${n.id}`,
        data: {
          step: steps[n.id] || { type: "exit" },
          problems: shownProblems.byStep[n.id] || [],
          counts: showCounts ? countsOf(n.id) : null,
          trail: trailByStep[n.id] || [],
          names,
          readOnly: !editable,
        },
      })),
    [nodes, steps, shownProblems, showCounts, countsOf, trailByStep, names, editable],
  );
  const rfEdges = useMemo(() => edgesOf(steps, selectedEdges, trailPairs, trail?.kind), [steps, selectedEdges, trailPairs, trail]);

  if (loadError) return <div className="lje-root lje-failed" role="alert">The journey could not be loaded: {loadError}</div>;
  if (!journey || !doc) return <div className="lje-root lje-loading">Loading the journey...</div>;

  const published = (journey.versions || []).filter((v) => v.published_at);
  const problemCount = Object.values(shownProblems.byStep).reduce((n, l) => n + l.length, 0) + shownProblems.general.length;
  const selectedStep = selectedKey ? steps[selectedKey] : null;

  return (
    <div className="lje-root">
      <header className="lje-toolbar">
        <div className="lje-title">
          <strong>{journey.name}</strong>
          <span className={`lje-status lje-status-${journey.status}`} data-status={journey.status}>
            {journey.status}
          </span>
          {journey.live_version ? <span className="lje-muted">live: version {journey.live_version}</span> : null}
        </div>
        <label className="lje-inline">
          Version{" "}
          <select value={String(view)} onChange={(e) => showVersion(e.target.value)} aria-label="Version shown">
            {(!forcedReadOnly || !journey.live_version) && (
              <option value="draft">
                {journey.draft_graph ? `Draft (version ${journey.latest_version})` : "Draft (a copy of the live version)"}
                {dirty ? " *" : ""}
              </option>
            )}
            {published.map((v) => (
              <option key={v.version} value={String(v.version)}>
                Version {v.version}
                {v.version === journey.live_version ? " (live)" : ""}, read-only
              </option>
            ))}
          </select>
        </label>
        {editable && (
          <>
            <button type="button" onClick={onSave} disabled={busy}>
              Save draft{dirty ? " *" : ""}
            </button>
            <button type="button" onClick={onValidate} disabled={busy}>
              Validate
            </button>
            <button type="button" className="lje-primary" onClick={onPublish} disabled={busy}>
              Publish
            </button>
          </>
        )}
        {!forcedReadOnly && journey.status === "live" && (
          <button type="button" onClick={() => onStatus("pause")} disabled={busy}>
            Pause
          </button>
        )}
        {!forcedReadOnly && journey.status === "paused" && (
          <button type="button" onClick={() => onStatus("resume")} disabled={busy}>
            Resume
          </button>
        )}
        <div className="lje-message" role="status" aria-live="polite">
          {message && (
            <span className={`lje-msg-${message.kind}`} title={message.text}>
              {message.text}
            </span>
          )}
        </div>
      </header>
      <div className="lje-body">
        {editable && <Palette onAdd={addStep} />}
        <div
          className="lje-canvas"
          ref={wrapper}
          onDragOver={(e) => {
            if (e.dataTransfer.types.includes(DRAG_TYPE)) {
              e.preventDefault();
              e.dataTransfer.dropEffect = "copy";
            }
          }}
          onDrop={onDrop}
        >
          <ReactFlow
            key={String(view)}
            nodes={rfNodes}
            edges={rfEdges}
            nodeTypes={NODE_TYPES}
            onNodesChange={onNodesChange}
            onEdgesChange={onEdgesChange}
            onConnect={onConnect}
            isValidConnection={isValidConnection}
            nodesDraggable={editable}
            nodesConnectable={editable}
            elementsSelectable
            deleteKeyCode={editable ? ["Backspace", "Delete"] : null}
            fitView
            fitViewOptions={{ padding: 0.2, maxZoom: 1 }}
            minZoom={0.2}
            proOptions={{ hideAttribution: true }}
            defaultEdgeOptions={{ type: "smoothstep" }}
          >
            <Background gap={20} />
            <Controls />
            <MiniMap
              pannable
              zoomable
              ariaLabel="Overview of the journey"
              style={{ width: 150, height: 100 }}
              nodeColor={(n) => MINIMAP_COLORS[n.data?.step?.type] || "#8c96a8"}
            />
          </ReactFlow>
          {!editable && <div className="lje-readonly-note">Read-only: {view === "draft" ? "this journey cannot be edited" : `version ${view}`}</div>}
        </div>
        <aside className="lje-side">
          <div className="lje-tabs" role="tablist" aria-label="Side panel">
            {[
              ["step", "Step"],
              ["problems", `Problems${problemCount ? ` (${problemCount})` : ""}`],
              ["journey", "Counts and paths"],
            ].map(([id, text]) => (
              <button
                key={id}
                type="button"
                role="tab"
                id={`lje-tab-${id}`}
                aria-selected={tab === id}
                aria-controls={`lje-tabpanel-${id}`}
                className={tab === id ? "lje-tab-on" : undefined}
                onClick={() => setTab(id)}
              >
                {text}
              </button>
            ))}
          </div>
          <div className="lje-tabpanel" role="tabpanel" id={`lje-tabpanel-${tab}`} aria-labelledby={`lje-tab-${tab}`}>
            {tab === "step" &&
              (selectedStep ? (
                <Panel
                  key={`${view}:${selectedKey}`}
                  stepKey={selectedKey}
                  step={selectedStep}
                  steps={steps}
                  problems={shownProblems.byStep[selectedKey] || []}
                  options={options}
                  readOnly={!editable}
                  counts={countsOf(selectedKey)}
                  trail={trailByStep[selectedKey]}
                  onChange={(next) => edit((d) => ({ ...d, steps: { ...d.steps, [selectedKey]: next } }))}
                  onRename={(to) =>
                    edit((d) => ({
                      steps: renameStep(d.steps, selectedKey, to),
                      nodes: d.nodes.map((n) => (n.id === selectedKey ? { ...n, id: to } : n)),
                    }))
                  }
                  onDelete={() =>
                    edit((d) => ({
                      steps: removeSteps(d.steps, [selectedKey]),
                      nodes: d.nodes.filter((n) => n.id !== selectedKey),
                    }))
                  }
                />
              ) : (
                <p className="lje-hint">Select a step on the graph (click it, or Tab to it and press Enter) to configure it.</p>
              ))}
            {tab === "problems" && <ProblemList problems={shownProblems} onPick={(key) => selectNode(key)} />}
            {tab === "journey" && (
              <Inspect
                journey={journey}
                versionStats={versionStats}
                countsVersion={countsVersion}
                showCounts={showCounts}
                setShowCounts={setShowCounts}
                refresh={() => act("Counts", loadStats)}
                trail={trail}
                shownVersion={view === "draft" ? (journey.draft_graph ? null : journey.live_version) : view}
                showVersion={(v) => showVersion(String(v))}
                clearTrail={() => setTrail(null)}
                entrances={Object.entries(steps)
                  .filter(([, s]) => s.type === "entrance")
                  .map(([k]) => k)}
                showUserPath={(text, index) => act("User path", () => showUserPath(text, index))}
                simulate={(text, eventText, entrance) => act("Dry run", () => simulate(text, eventText, entrance))}
                busy={busy}
              />
            )}
          </div>
        </aside>
      </div>
    </div>
  );

  function selectNode(key) {
    updateDoc((d) => ({ ...d, nodes: d.nodes.map((n) => ({ ...n, selected: n.id === key })) }));
    const node = nodes.find((n) => n.id === key);
    if (node) flow.setCenter(node.position.x + 90, node.position.y + 40, { zoom: 1, duration: 200 });
    setTab("step");
  }
}

// Where a step added from the keyboard goes: from `start`, the first place (left to right, then down) where
// it overlaps no other step.
function freeSpot(nodes, start) {
  const size = (n) => ({ w: n.measured?.width || 200, h: n.measured?.height || 100 });
  const clear = (x, y) =>
    nodes.every((n) => {
      const { w, h } = size(n);
      return x + 200 + 10 <= n.position.x || x >= n.position.x + w + 10 || y + 100 + 10 <= n.position.y || y >= n.position.y + h + 10;
    });
  for (let row = 0; row < 40; row += 1) {
    for (let col = 0; col < 4; col += 1) {
      const x = Math.round(start.x + col * 230);
      const y = Math.round(start.y + row * 130);
      if (clear(x, y)) return { x, y };
    }
  }
  return start;
}

function Palette({ onAdd }) {
  return (
    <nav className="lje-palette" aria-label="Steps to add">
      <p className="lje-hint">Drag a step onto the graph, or press it to add it in the middle.</p>
      {PALETTE.map((group) => (
        <div key={group.group} className="lje-palette-group">
          <h3>{group.group}</h3>
          {group.items.map((item) => (
            <button
              key={item.id}
              type="button"
              draggable
              data-palette={item.id}
              className="lje-palette-item"
              onDragStart={(e) => {
                e.dataTransfer.setData(DRAG_TYPE, item.id);
                e.dataTransfer.effectAllowed = "copy";
              }}
              onClick={() => onAdd(item.id)}
            >
              {item.label}
            </button>
          ))}
        </div>
      ))}
    </nav>
  );
}

function ProblemList({ problems, onPick }) {
  const entries = Object.entries(problems.byStep);
  if (!entries.length && !problems.general.length) return <p className="lje-hint">No problems found in the draft (Validate checks it again).</p>;
  return (
    <div className="lje-problem-list" role="alert">
      {problems.general.length > 0 && (
        <ul>
          {problems.general.map((p, n) => (
            <li key={n}>
              {p.field ? <code>{p.field}</code> : null} {p.message}
            </li>
          ))}
        </ul>
      )}
      {entries.map(([key, list]) => (
        <div key={key}>
          <button type="button" className="lje-link" onClick={() => onPick(key)}>
            Step {key}
          </button>
          <ul>
            {list.map((p, n) => (
              <li key={n}>
                {p.field ? <code>{p.field}</code> : null}: {p.message}
              </li>
            ))}
          </ul>
        </div>
      ))}
    </div>
  );
}

function Inspect({
  journey,
  versionStats,
  countsVersion,
  showCounts,
  setShowCounts,
  refresh,
  trail,
  shownVersion,
  showVersion,
  clearTrail,
  entrances,
  showUserPath,
  simulate,
  busy,
}) {
  const [user, setUser] = useState("");
  const [simUser, setSimUser] = useState("");
  const [eventText, setEventText] = useState("");
  const [entrance, setEntrance] = useState("");
  return (
    <div className="lje-inspect">
      <section aria-labelledby="lje-counts-h">
        <h2 id="lje-counts-h">Counts</h2>
        {countsVersion ? (
          <>
            <p>
              Version {countsVersion}: {versionStats?.entered ?? 0} entered
              {versionStats?.ended && Object.keys(versionStats.ended).length
                ? `; ended: ${Object.entries(versionStats.ended).map(([k, v]) => `${k} ${v}`).join(", ")}`
                : ""}
            </p>
            <div className="lje-row">
              <label className="lje-inline">
                <input type="checkbox" checked={showCounts} onChange={(e) => setShowCounts(e.target.checked)} /> Show counts on
                the steps
              </label>
              <button type="button" onClick={refresh} disabled={busy}>
                Refresh counts
              </button>
            </div>
          </>
        ) : (
          <p className="lje-hint">Counts appear once the journey is published ({journey.status}).</p>
        )}
      </section>
      <section aria-labelledby="lje-path-h">
        <h2 id="lje-path-h">A user's path</h2>
        <form
          onSubmit={(e) => {
            e.preventDefault();
            if (user.trim()) showUserPath(user);
          }}
        >
          <div className="lje-field">
            <label htmlFor="lje-path-user">User id or external id</label>
            <input id="lje-path-user" value={user} onChange={(e) => setUser(e.target.value)} />
          </div>
          <button type="submit" disabled={busy || !user.trim()}>
            Show path
          </button>
        </form>
      </section>
      <section aria-labelledby="lje-sim-h">
        <h2 id="lje-sim-h">Dry run</h2>
        <form
          onSubmit={(e) => {
            e.preventDefault();
            if (simUser.trim()) simulate(simUser, eventText, entrance);
          }}
        >
          <div className="lje-field">
            <label htmlFor="lje-sim-user">Simulate for user (id or external id)</label>
            <input id="lje-sim-user" value={simUser} onChange={(e) => setSimUser(e.target.value)} />
          </div>
          <div className="lje-field">
            <label htmlFor="lje-sim-event">Entering event (JSON, optional)</label>
            <textarea
              id="lje-sim-event"
              className="lje-json"
              rows={3}
              spellCheck={false}
              placeholder='{"name": "signup", "data": {"plan": "pro"}}'
              value={eventText}
              onChange={(e) => setEventText(e.target.value)}
            />
          </div>
          {entrances.length > 1 && (
            <div className="lje-field">
              <label htmlFor="lje-sim-entrance">Entrance</label>
              <select id="lje-sim-entrance" value={entrance} onChange={(e) => setEntrance(e.target.value)}>
                <option value="">(the first)</option>
                {entrances.map((k) => (
                  <option key={k} value={k}>
                    {k}
                  </option>
                ))}
              </select>
            </div>
          )}
          <button type="submit" disabled={busy || !simUser.trim()}>
            Run the dry run
          </button>
        </form>
      </section>
      {trail && (
        <section aria-labelledby="lje-trail-h" className="lje-trail">
          <h2 id="lje-trail-h">{trail.kind === "sim" ? "Dry run" : "Path"}</h2>
          <p>{trail.label}</p>
          {trail.version !== shownVersion && (
            <p className="lje-msg-warn">
              Drawn over {shownVersion ? `version ${shownVersion}` : "the draft"}, where steps of the same key are
              marked.{" "}
              <button type="button" className="lje-link" onClick={() => showVersion(trail.version)}>
                Show version {trail.version}
              </button>
            </p>
          )}
          {trail.kind === "user" && trail.runs.length > 1 && (
            <div className="lje-field">
              <label htmlFor="lje-run-pick">Run</label>
              <select id="lje-run-pick" value={trail.runIndex} onChange={(e) => showUserPath(trail.user, Number(e.target.value))}>
                {trail.runs.map((r, n) => (
                  <option key={r.id} value={n}>
                    {r.entered_at} ({r.status}, version {r.version})
                  </option>
                ))}
              </select>
            </div>
          )}
          <ol className="lje-trail-list">
            {trail.entries.map((e) => (
              <li key={e.order}>
                <code>{e.step}</code>: {e.outcome}
                {e.detail ? <span className="lje-muted"> {JSON.stringify(e.detail)}</span> : null}
              </li>
            ))}
          </ol>
          {trail.error && <p className="lje-msg-error">Error: {trail.error}</p>}
          <button type="button" onClick={clearTrail}>
            Clear the path
          </button>
        </section>
      )}
    </div>
  );
}
