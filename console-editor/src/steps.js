// The step catalogue: what the palette offers, the step each entry starts as, and the ways out of each type.
// The shapes follow the server's graph model (docs/journeys.md): a draft only saves when every step has
// the fields its type needs, so required fields start empty and the save names them on the step.

export const UNITS = ["seconds", "minutes", "hours", "days", "weeks"];
export const WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
export const CHANNELS = ["email", "sms", "push", "webhook", "inbox", "whatsapp"];
export const DEFAULT_RULE = { type: "property", path: "email", op: "exists" };

export const TYPE_LABELS = {
  entrance: "Entrance",
  delay: "Delay",
  wait_for_event: "Wait for event",
  condition: "Condition",
  split: "Split",
  experiment: "Experiment",
  rate_limit: "Rate limit",
  webhook: "Webhook",
  update_user: "Update user",
  add_to_list: "Add to list",
  remove_from_list: "Remove from list",
  emit_event: "Emit event",
  enter_journey: "Enter journey",
  send: "Send message",
  goal: "Goal",
  exit: "Exit",
};

export const TRIGGER_LABELS = {
  event: "event",
  organization_event: "organization event",
  list: "list change",
  schedule: "schedule",
  api: "API",
};

// Palette entries, grouped; `make` returns a fresh step (positions are added where it is dropped).
export const PALETTE = [
  {
    group: "Entrances",
    items: [
      { id: "entrance_event", label: "Entrance: event", make: () => entrance({ kind: "event", event: "" }) },
      {
        id: "entrance_organization_event",
        label: "Entrance: organization event",
        make: () => entrance({ kind: "organization_event", event: "" }),
      },
      {
        id: "entrance_list",
        label: "Entrance: list change",
        make: () => entrance({ kind: "list", list_id: "", on: "entered", enter_current_members: false }),
      },
      {
        id: "entrance_schedule",
        label: "Entrance: schedule",
        make: () => entrance({ kind: "schedule", name: "", target: "user", offset: { value: 0, unit: "days" } }),
      },
      { id: "entrance_api", label: "Entrance: API", make: () => entrance({ kind: "api" }) },
    ],
  },
  {
    group: "Flow",
    items: [
      {
        id: "delay_duration",
        label: "Delay: duration",
        make: () => ({ type: "delay", mode: "duration", duration: { value: 1, unit: "days" } }),
      },
      {
        id: "delay_time_of_day",
        label: "Delay: time of day",
        make: () => ({ type: "delay", mode: "time_of_day", time: "09:00" }),
      },
      {
        id: "delay_date",
        label: "Delay: until a date",
        make: () => ({ type: "delay", mode: "date", path: "", offset: { value: 0, unit: "days" } }),
      },
      {
        id: "wait_for_event",
        label: "Wait for event",
        make: () => ({ type: "wait_for_event", event: "", timeout: { value: 1, unit: "days" } }),
      },
      { id: "condition", label: "Condition", make: () => ({ type: "condition", rule: { ...DEFAULT_RULE } }) },
      {
        id: "split",
        label: "Split",
        make: () => ({ type: "split", branches: [{ name: "A", rule: { ...DEFAULT_RULE } }] }),
      },
      {
        id: "experiment",
        label: "Experiment",
        make: () => ({
          type: "experiment",
          variants: [
            { name: "A", weight: 50 },
            { name: "B", weight: 50 },
          ],
        }),
      },
      {
        id: "rate_limit",
        label: "Rate limit",
        make: () => ({ type: "rate_limit", limit: 100, period: { value: 1, unit: "hours" }, over: "wait" }),
      },
    ],
  },
  {
    group: "Actions",
    items: [
      { id: "send", label: "Send message", make: () => ({ type: "send", channel: "email", template_id: "" }) },
      {
        id: "webhook",
        label: "Webhook",
        make: () => ({ type: "webhook", method: "POST", url: "", timeout_seconds: 10, retries: 3 }),
      },
      { id: "update_user", label: "Update user", make: () => ({ type: "update_user", data: {} }) },
      { id: "add_to_list", label: "Add to list", make: () => ({ type: "add_to_list", list_id: "" }) },
      { id: "remove_from_list", label: "Remove from list", make: () => ({ type: "remove_from_list", list_id: "" }) },
      { id: "emit_event", label: "Emit event", make: () => ({ type: "emit_event", event: "", data: {} }) },
      { id: "enter_journey", label: "Enter journey", make: () => ({ type: "enter_journey", journey_id: "" }) },
    ],
  },
  {
    group: "Endings",
    items: [
      { id: "goal", label: "Goal", make: () => ({ type: "goal", event: "" }) },
      { id: "exit", label: "Exit", make: () => ({ type: "exit" }) },
    ],
  },
];

export const PALETTE_BY_ID = Object.fromEntries(PALETTE.flatMap((g) => g.items.map((item) => [item.id, item])));

function entrance(trigger) {
  return { type: "entrance", trigger };
}

// Every way out of a step: {field, handle, label, target}. `field` is the server's name for it (problems
// say `branches[0].next`), `handle` the React Flow handle id.
export function exitsOf(step) {
  switch (step.type) {
    case "condition":
      return [
        { field: "then", handle: "then", label: "yes", target: step.then },
        { field: "else", handle: "else", label: "no", target: step.else },
      ];
    case "split":
      return [
        ...(step.branches || []).map((b, n) => ({
          field: `branches[${n}].next`,
          handle: `branches.${n}`,
          label: b.name || `branch ${n + 1}`,
          target: b.next,
        })),
        { field: "default", handle: "default", label: "default", target: step.default },
      ];
    case "experiment":
      return (step.variants || []).map((v, n) => ({
        field: `variants[${n}].next`,
        handle: `variants.${n}`,
        label: v.name || `variant ${n + 1}`,
        target: v.next,
      }));
    case "wait_for_event":
      return [
        { field: "next", handle: "next", label: "event", target: step.next },
        { field: "timeout_next", handle: "timeout_next", label: "timeout", target: step.timeout_next },
      ];
    case "webhook":
      return [
        { field: "next", handle: "next", label: "ok", target: step.next },
        { field: "failure_next", handle: "failure_next", label: "failure", target: step.failure_next },
      ];
    case "goal":
    case "exit":
      return [];
    default:
      return [{ field: "next", handle: "next", label: "next", target: step.next }];
  }
}

// A copy of `step` with the exit at `handle` leading to `target` (null or undefined: nowhere).
export function withExit(step, handle, target) {
  const copy = structuredClone(step);
  const [list, index] = handle.split(".");
  if (list === "branches" || list === "variants") {
    const item = copy[list][Number(index)];
    if (target) item.next = target;
    else delete item.next;
  } else if (target) {
    copy[handle] = target;
  } else {
    delete copy[handle];
  }
  return copy;
}

// Whether runs may be led to a step of this type (never to an entrance or a goal).
export function canEnter(step) {
  return step.type !== "entrance" && step.type !== "goal";
}

export function typeLabel(step) {
  if (step.type === "entrance") return `Entrance: ${TRIGGER_LABELS[step.trigger?.kind] || "?"}`;
  if (step.type === "delay") {
    return { duration: "Delay", time_of_day: "Delay: time of day", date: "Delay: until a date" }[step.mode || "duration"];
  }
  return TYPE_LABELS[step.type] || step.type;
}

function span(d) {
  return d ? `${d.value} ${d.unit}` : "?";
}

// One line saying what the step does, for the node on the graph.
export function summary(step, names) {
  switch (step.type) {
    case "entrance": {
      const t = step.trigger || {};
      if (t.kind === "event" || t.kind === "organization_event") return t.event ? `on "${t.event}"` : "no event yet";
      if (t.kind === "list") return `${t.on === "exited" ? "leaves" : "enters"} ${names.list(t.list_id)}`;
      if (t.kind === "schedule") return t.name ? `schedule "${t.name}"` : "no schedule yet";
      return "POST /entrances";
    }
    case "delay":
      if (step.mode === "time_of_day") {
        return `until ${step.time || "?"}${step.weekdays ? ` (${step.weekdays.join(", ")})` : ""}`;
      }
      if (step.mode === "date") return `until ${step.path || "?"}`;
      return `wait ${span(step.duration)}`;
    case "wait_for_event":
      return `${step.event ? `"${step.event}"` : "no event yet"}, up to ${span(step.timeout)}`;
    case "condition":
      return ruleSummary(step.rule);
    case "split":
      return `${(step.branches || []).length} branch(es)`;
    case "experiment":
      return (step.variants || []).map((v) => `${v.name} ${v.weight}`).join(" / ");
    case "rate_limit":
      return `${step.limit} per ${span(step.period)}, then ${step.over || "wait"}`;
    case "webhook":
      return `${step.method || "POST"} ${step.url || "?"}`;
    case "update_user":
      return Object.keys(step.data || {}).join(", ") || "no data yet";
    case "add_to_list":
    case "remove_from_list":
      return names.list(step.list_id);
    case "emit_event":
      return step.event ? `"${step.event}"` : "no event yet";
    case "enter_journey":
      return names.journey(step.journey_id);
    case "send":
      return `${step.channel}: ${names.template(step.template_id)}`;
    case "goal":
      return step.list_id ? `joins ${names.list(step.list_id)}` : step.event ? `"${step.event}"` : "no event yet";
    default:
      return "";
  }
}

function ruleSummary(rule) {
  if (!rule || typeof rule !== "object") return "no rule";
  if (rule.type === "all" || rule.type === "any") return `${rule.type} of ${(rule.rules || []).length}`;
  if (rule.type === "property" || rule.type === "context") {
    return `${rule.path} ${rule.op}${rule.value === undefined ? "" : ` ${JSON.stringify(rule.value)}`}`;
  }
  if (rule.type === "event") return `${rule.did === false ? "did not" : "did"} ${rule.name}`;
  if (rule.type === "visited") return `${rule.visited === false ? "not " : ""}visited ${rule.step}`;
  return rule.type || "rule";
}

// A fresh key for a new step: its type and the first free number.
export function freshKey(type, steps) {
  const base = type === "entrance" ? "entrance" : type;
  for (let n = 1; ; n += 1) {
    const key = `${base}_${n}`;
    if (!(key in steps)) return key;
  }
}

export const KEY_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

// The steps with `key` renamed to `to`, every exit (and `visited` rule) that led to it following it.
export function renameStep(steps, key, to) {
  const out = {};
  for (const [k, step] of Object.entries(steps)) {
    let copy = step;
    for (const exit of exitsOf(step)) {
      if (exit.target === key) copy = withExit(copy, exit.handle, to);
    }
    out[k === key ? to : k] = copy;
  }
  return out;
}

// The steps without `keys`, exits that led to them cleared.
export function removeSteps(steps, keys) {
  const gone = new Set(keys);
  const out = {};
  for (const [k, step] of Object.entries(steps)) {
    if (gone.has(k)) continue;
    let copy = step;
    for (const exit of exitsOf(step)) {
      if (gone.has(exit.target)) copy = withExit(copy, exit.handle, null);
    }
    out[k] = copy;
  }
  return out;
}

// Outcomes of the engine and of the dry run, said for people (the raw outcome is shown beside it).
export function describeOutcome(outcome, detail) {
  const d = detail && typeof detail === "object" ? detail : {};
  const text = {
    entered: "entered",
    not_entered: "did not enter: the entrance rule does not match",
    yes: "rule matched: yes",
    no: "rule did not match: no",
    waits: d.until ? `waits until ${d.until}` : "waits",
    waits_for_event: "waits for the event",
    exited: "exits",
    completed: "completed",
    converted: "converted",
    would_call: d.url ? `would call ${d.method || ""} ${d.url}` : "would call the webhook",
  }[outcome];
  if (text) return text;
  if (outcome && outcome.startsWith("branch:")) return `took branch ${outcome.slice(7)}`;
  if (outcome && outcome.startsWith("variant:")) return `drew variant ${outcome.slice(8)}`;
  if (outcome && outcome.startsWith("status:")) return `answered ${outcome.slice(7)}`;
  const extra = detail && typeof detail === "object" ? compact(detail) : "";
  return `${String(outcome || "").replaceAll("_", " ")}${extra ? ` (${extra})` : ""}`;
}

// {"a": 1, "b": "x"} as `a: 1, b: x`, cut to a length a node can show.
export function compact(detail) {
  const text = Object.entries(detail)
    .map(([k, v]) => `${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`)
    .join(", ");
  return text.length > 120 ? `${text.slice(0, 117)}...` : text;
}
