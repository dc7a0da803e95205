// Between the server's graph JSON and what React Flow draws: nodes (positions from x/y, or laid out when a
// graph has none), edges (one per exit that leads somewhere), and the server's problems placed on steps.
import { exitsOf } from "./steps.js";

const COLUMN = 260;
const ROW = 170;

// Positions for steps without x/y: entrances on the first row, each step a row below the step leading to it
// (breadth first), goals and unreachable steps to the right.
export function layout(steps) {
  const keys = Object.keys(steps);
  const placed = {};
  const depth = {};
  const queue = keys.filter((k) => steps[k].type === "entrance");
  queue.forEach((k) => {
    depth[k] = 0;
  });
  while (queue.length) {
    const k = queue.shift();
    for (const exit of exitsOf(steps[k])) {
      if (exit.target && exit.target in steps && !(exit.target in depth)) {
        depth[exit.target] = depth[k] + 1;
        queue.push(exit.target);
      }
    }
  }
  const rows = {};
  const rest = [];
  for (const k of keys) {
    if (k in depth) (rows[depth[k]] ||= []).push(k);
    else rest.push(k);
  }
  let widest = 0;
  for (const [d, row] of Object.entries(rows)) {
    row.forEach((k, n) => {
      placed[k] = { x: n * COLUMN, y: Number(d) * ROW };
    });
    widest = Math.max(widest, row.length);
  }
  rest.forEach((k, n) => {
    placed[k] = { x: widest * COLUMN + 40, y: n * ROW };
  });
  return placed;
}

// The nodes of a graph: every step at its x/y (or a laid out place when any step lacks one).
export function nodesOf(steps) {
  const missing = Object.values(steps).some((s) => typeof s.x !== "number" || typeof s.y !== "number");
  const auto = missing ? layout(steps) : {};
  return Object.entries(steps).map(([key, s]) => ({
    id: key,
    type: "step",
    position: typeof s.x === "number" && typeof s.y === "number" ? { x: s.x, y: s.y } : auto[key],
    data: {},
  }));
}

// The steps of a graph (while editing, the nodes hold the positions; graphOf puts them back).
export function stepsOf(graph) {
  return structuredClone(graph?.steps || {});
}

// The graph to save: each step with its node's position, rounded, and nothing undefined.
export function graphOf(steps, nodes) {
  const at = Object.fromEntries(nodes.map((n) => [n.id, n.position]));
  const out = {};
  for (const [key, step] of Object.entries(steps)) {
    const { x, y, ...rest } = step;
    const pos = at[key] || { x: x ?? 0, y: y ?? 0 };
    out[key] = JSON.parse(JSON.stringify({ ...rest, x: Math.round(pos.x), y: Math.round(pos.y) }));
  }
  return { steps: out };
}

export function edgesOf(steps, selectedEdges, trailPairs, trailKind) {
  const edges = [];
  for (const [key, step] of Object.entries(steps)) {
    for (const exit of exitsOf(step)) {
      if (!exit.target || !(exit.target in steps)) continue;
      const id = `${key}:${exit.handle}`;
      const onTrail = trailPairs.has(`${key}>${exit.target}`);
      edges.push({
        id,
        source: key,
        sourceHandle: exit.handle,
        target: exit.target,
        selected: selectedEdges.has(id),
        animated: onTrail,
        className: onTrail ? `lje-edge-trail lje-edge-${trailKind}` : undefined,
        ariaLabel: `from ${key} (${exit.label}) to ${exit.target}`,
      });
    }
  }
  return edges;
}

// Problems of a refused save (problem JSON `errors`: `graph.steps.<key>.<type>.<field>`, the type being
// pydantic's tag) as {byStep: {key: [{field, message}]}, general: [...]}.
export function saveProblems(problem, steps) {
  const byStep = {};
  const general = [];
  const errors = problem?.errors?.length ? problem.errors : [{ field: "", rule: problem?.detail || "not saved" }];
  for (const e of errors) {
    const m = /^graph\.steps\.([A-Za-z0-9_-]+)(?:\.(.*))?$/.exec(e.field || "");
    if (!m || !(m[1] in steps)) {
      general.push({ step: null, field: e.field || "", message: e.rule });
      continue;
    }
    const step = steps[m[1]];
    let field = m[2] || "";
    if (field === step.type || field.startsWith(`${step.type}.`)) field = field.slice(step.type.length + 1);
    const kind = step.trigger?.kind;
    if (kind && (field === `trigger.${kind}` || field.startsWith(`trigger.${kind}.`))) {
      field = `trigger${field.slice(`trigger.${kind}`.length)}`;
    }
    (byStep[m[1]] ||= []).push({ step: m[1], field, message: e.rule });
  }
  return { byStep, general };
}

// Problems of /validate ({step, field, message}) in the same shape.
export function validateProblems(problems, steps) {
  const byStep = {};
  const general = [];
  for (const p of problems || []) {
    if (p.step && p.step in steps) (byStep[p.step] ||= []).push(p);
    else general.push(p);
  }
  return { byStep, general };
}
