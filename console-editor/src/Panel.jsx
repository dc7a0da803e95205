// The side panel: the selected step's form (one per type), its exits as selects (the keyboard's way to
// connect steps), the problems the server found on it, its counts, and what the shown path did there.
import { useState } from "react";
import {
  CheckboxField,
  checkObject,
  checkRule,
  JsonField,
  NumberField,
  Problems,
  SelectField,
  SpanField,
  TextField,
} from "./fields.jsx";
import { CHANNELS, canEnter, describeOutcome, exitsOf, KEY_PATTERN, typeLabel, WEEKDAYS, withExit } from "./steps.js";

const RULE_HINT = 'e.g. {"type": "property", "path": "data.plan", "op": "equals", "value": "pro"}';

// Problems whose field is `prefix` or inside it (`rule` takes `rule.rules[0].path`).
function under(problems, prefix) {
  return problems
    .filter((p) => p.field === prefix || p.field.startsWith(`${prefix}.`) || p.field.startsWith(`${prefix}[`))
    .map((p) => (p.field === prefix ? p.message : `${p.field.slice(prefix.length).replace(/^\./, "")}: ${p.message}`));
}

export function Panel({
  stepKey,
  step,
  steps,
  problems,
  options,
  readOnly,
  counts,
  trail,
  onChange,
  onRename,
  onDelete,
}) {
  const [keyDraft, setKeyDraft] = useState(stepKey);
  const [keyError, setKeyError] = useState(null);
  const set = (patch) => onChange({ ...step, ...patch });
  const setTrigger = (patch) => onChange({ ...step, trigger: { ...step.trigger, ...patch } });
  const p = (field) => under(problems, field);
  const dis = readOnly;

  function rename() {
    if (keyDraft === stepKey) return;
    if (!KEY_PATTERN.test(keyDraft)) {
      setKeyError("1 to 64 letters, digits, _ or -");
      return;
    }
    if (keyDraft in steps) {
      setKeyError(`a step ${keyDraft} exists already`);
      return;
    }
    setKeyError(null);
    onRename(keyDraft);
  }

  const targets = Object.entries(steps)
    .filter(([, s]) => canEnter(s))
    .map(([k]) => k);

  return (
    <section className="lje-panel" aria-label={`Step ${stepKey}`}>
      <h2>
        <span className={`lje-type lje-type-${step.type}`}>{typeLabel(step)}</span> {stepKey}
      </h2>
      {problems.length > 0 && (
        <div className="lje-panel-problems" role="alert">
          <strong>Problems on this step</strong>
          <ul>
            {problems.map((q, n) => (
              <li key={n}>
                <code>{q.field}</code>: {q.message}
              </li>
            ))}
          </ul>
        </div>
      )}
      {counts && (
        <p className="lje-panel-counts">
          Live version {counts.version}: {counts.through} through, {counts.inStep} in this step
          {counts.outcomes ? ` (${counts.outcomes})` : ""}
        </p>
      )}
      {trail && trail.length > 0 && (
        <div className="lje-panel-trail">
          <strong>{trail[0].label}</strong>
          <ol>
            {trail.map((t, n) => (
              <li key={n}>
                #{t.order}: {describeOutcome(t.outcome, t.detail)}
              </li>
            ))}
          </ol>
        </div>
      )}

      <div className="lje-field">
        <label htmlFor="lje-step-key">Key</label>
        <div className="lje-row">
          <input
            id="lje-step-key"
            value={keyDraft}
            disabled={dis}
            aria-invalid={keyError ? true : undefined}
            aria-describedby={keyError ? "lje-step-key-error" : undefined}
            onChange={(e) => setKeyDraft(e.target.value)}
            onKeyDown={(e) => e.key === "Enter" && rename()}
          />
          {!dis && (
            <button type="button" onClick={rename} disabled={keyDraft === stepKey}>
              Rename
            </button>
          )}
        </div>
        {keyError && (
          <p className="lje-json-error" id="lje-step-key-error" role="alert">
            {keyError}
          </p>
        )}
      </div>
      <TextField
        label="Label"
        value={step.name}
        disabled={dis}
        problems={p("name")}
        onChange={(v) => set({ name: v || undefined })}
      />

      <StepForm step={step} set={set} setTrigger={setTrigger} p={p} dis={dis} options={options} />

      {exitsOf(step).length > 0 && (
        <fieldset className="lje-exits">
          <legend>Where runs go next</legend>
          {exitsOf(step).map((exit) => (
            <SelectField
              key={exit.handle}
              label={`Exit "${exit.label}"`}
              value={exit.target}
              options={targets.filter((k) => k !== stepKey || step.type !== "entrance")}
              empty="(nowhere: the run completes)"
              disabled={dis}
              problems={p(exit.field)}
              onChange={(v) => onChange(withExit(step, exit.handle, v))}
            />
          ))}
        </fieldset>
      )}
      {!dis && (
        <button type="button" className="lje-danger" onClick={onDelete}>
          Delete step
        </button>
      )}
    </section>
  );
}

function StepForm({ step, set, setTrigger, p, dis, options }) {
  const listOptions = (staticOnly) =>
    options.lists.filter((l) => !staticOnly || l.kind === "static").map((l) => [l.id, `${l.name} (${l.kind})`]);
  switch (step.type) {
    case "entrance":
      return <EntranceForm step={step} setTrigger={setTrigger} p={p} dis={dis} listOptions={listOptions} />;
    case "delay":
      return <DelayForm step={step} set={set} p={p} dis={dis} />;
    case "wait_for_event":
      return (
        <>
          <TextField label="Event name" value={step.event} required disabled={dis} problems={p("event")} onChange={(v) => set({ event: v })} />
          <JsonField
            label="Rule over the event (JSON, optional)"
            value={step.rule}
            optional
            check={checkRule}
            hint={'e.g. {"type": "context", "path": "event.data.plan", "op": "equals", "value": "pro"}'}
            disabled={dis}
            problems={p("rule")}
            onChange={(v) => set({ rule: v })}
          />
          <SpanField label="Timeout" value={step.timeout} disabled={dis} problems={p("timeout")} onChange={(v) => set({ timeout: v })} />
        </>
      );
    case "condition":
      return (
        <JsonField
          label="Rule (JSON)"
          value={step.rule}
          check={checkRule}
          hint={RULE_HINT}
          disabled={dis}
          problems={p("rule")}
          onChange={(v) => set({ rule: v })}
        />
      );
    case "split":
      return <SplitForm step={step} set={set} p={p} dis={dis} />;
    case "experiment":
      return <ExperimentForm step={step} set={set} p={p} dis={dis} />;
    case "rate_limit":
      return (
        <>
          <NumberField label="Runs per period" value={step.limit} min={1} disabled={dis} problems={p("limit")} onChange={(v) => set({ limit: v })} />
          <SpanField label="Period" value={step.period} disabled={dis} problems={p("period")} onChange={(v) => set({ period: v })} />
          <SelectField
            label="Over the limit"
            value={step.over || "wait"}
            options={[
              ["wait", "wait for the next period"],
              ["exit", "exit the journey"],
            ]}
            disabled={dis}
            problems={p("over")}
            onChange={(v) => set({ over: v })}
          />
        </>
      );
    case "webhook":
      return <WebhookForm step={step} set={set} p={p} dis={dis} />;
    case "update_user":
      return (
        <JsonField
          label="Data to merge into the user (JSON object; strings may be Liquid templates)"
          value={step.data}
          check={checkObject}
          hint={'e.g. {"plan": "pro", "greeting": "Hi {{ user.email }}"}'}
          disabled={dis}
          problems={p("data")}
          onChange={(v) => set({ data: v })}
        />
      );
    case "add_to_list":
    case "remove_from_list":
      return (
        <SelectField
          label="Static list"
          value={step.list_id}
          options={withCurrent(listOptions(true), step.list_id)}
          empty="(choose a list)"
          disabled={dis}
          problems={p("list_id")}
          onChange={(v) => set({ list_id: v || "" })}
        />
      );
    case "emit_event":
      return (
        <>
          <TextField label="Event name" value={step.event} required disabled={dis} problems={p("event")} onChange={(v) => set({ event: v })} />
          <JsonField
            label="Event data (JSON object; strings may be templates)"
            value={step.data || {}}
            check={checkObject}
            disabled={dis}
            problems={p("data")}
            onChange={(v) => set({ data: v })}
          />
        </>
      );
    case "enter_journey":
      return (
        <SelectField
          label="Journey"
          value={step.journey_id}
          options={withCurrent(
            options.journeys.filter((j) => j.id !== options.journeyId).map((j) => [j.id, `${j.name} (${j.status})`]),
            step.journey_id,
          )}
          empty="(choose a journey)"
          disabled={dis}
          problems={p("journey_id")}
          onChange={(v) => set({ journey_id: v || "" })}
        />
      );
    case "send":
      return (
        <>
          <SelectField
            label="Channel"
            value={step.channel}
            options={CHANNELS}
            disabled={dis}
            problems={p("channel")}
            onChange={(v) => set({ channel: v })}
          />
          <SelectField
            label="Template"
            value={step.template_id}
            options={withCurrent(
              options.templates.filter((t) => t.channel === step.channel).map((t) => [t.id, t.name]),
              step.template_id,
            )}
            empty="(choose a template)"
            disabled={dis}
            problems={p("template_id")}
            onChange={(v) => set({ template_id: v || "" })}
          />
          <JsonField
            label="Extra template data (JSON object)"
            value={step.data || {}}
            check={checkObject}
            disabled={dis}
            problems={p("data")}
            onChange={(v) => set({ data: v })}
          />
        </>
      );
    case "goal":
      return <GoalForm step={step} set={set} p={p} dis={dis} listOptions={listOptions} />;
    default:
      return <p className="lje-hint">An exit step ends the run as exited.</p>;
  }
}

// A picker's options plus the saved value when it is not among them (a list deleted since, or not loaded).
function withCurrent(opts, current) {
  if (!current || opts.some(([v]) => v === current)) return opts;
  return [...opts, [current, `${current} (unknown)`]];
}

function EntranceForm({ step, setTrigger, p, dis, listOptions }) {
  const t = step.trigger || { kind: "api" };
  function kind(next) {
    const fresh = {
      event: { kind: "event", event: "" },
      organization_event: { kind: "organization_event", event: "" },
      list: { kind: "list", list_id: "", on: "entered", enter_current_members: false },
      schedule: { kind: "schedule", name: "", target: "user", offset: { value: 0, unit: "days" } },
      api: { kind: "api" },
    }[next];
    setTrigger({ ...Object.fromEntries(Object.keys(t).map((k) => [k, undefined])), ...fresh });
  }
  return (
    <>
      <SelectField
        label="Trigger"
        value={t.kind}
        options={[
          ["event", "an event of the user"],
          ["organization_event", "an event of the user's organization"],
          ["list", "entering or leaving a list"],
          ["schedule", "a schedule"],
          ["api", "the API (POST /entrances)"],
        ]}
        disabled={dis}
        problems={p("trigger.kind")}
        onChange={kind}
      />
      {(t.kind === "event" || t.kind === "organization_event") && (
        <>
          <TextField
            label="Event name"
            value={t.event}
            required
            disabled={dis}
            problems={p("trigger.event")}
            onChange={(v) => setTrigger({ event: v })}
          />
          <JsonField
            label="Entrance rule (JSON, optional)"
            value={t.rule}
            optional
            check={checkRule}
            hint={RULE_HINT}
            disabled={dis}
            problems={p("trigger.rule")}
            onChange={(v) => setTrigger({ rule: v })}
          />
        </>
      )}
      {t.kind === "list" && (
        <>
          <SelectField
            label="List"
            value={t.list_id}
            options={withCurrent(listOptions(false), t.list_id)}
            empty="(choose a list)"
            disabled={dis}
            problems={p("trigger.list_id")}
            onChange={(v) => setTrigger({ list_id: v || "" })}
          />
          <SelectField
            label="When a user"
            value={t.on || "entered"}
            options={[
              ["entered", "enters the list"],
              ["exited", "leaves the list"],
            ]}
            disabled={dis}
            problems={p("trigger.on")}
            onChange={(v) => setTrigger({ on: v })}
          />
          <CheckboxField
            label="Also enter the list's current members on publish"
            checked={t.enter_current_members}
            disabled={dis}
            onChange={(v) => setTrigger({ enter_current_members: v })}
          />
        </>
      )}
      {t.kind === "schedule" && (
        <>
          <TextField
            label="Schedule name"
            value={t.name}
            required
            disabled={dis}
            problems={p("trigger.name")}
            onChange={(v) => setTrigger({ name: v })}
          />
          <SelectField
            label="Schedule of"
            value={t.target || "user"}
            options={[
              ["user", "the user"],
              ["organization", "an organization (each member enters)"],
            ]}
            disabled={dis}
            problems={p("trigger.target")}
            onChange={(v) => setTrigger({ target: v })}
          />
          <SpanField
            label="Offset (negative: before)"
            signed
            value={t.offset}
            disabled={dis}
            problems={p("trigger.offset")}
            onChange={(v) => setTrigger({ offset: v })}
          />
        </>
      )}
    </>
  );
}

function DelayForm({ step, set, p, dis }) {
  const mode = step.mode || "duration";
  function changeMode(next) {
    const base = { ...step, mode: next, duration: undefined, time: undefined, weekdays: undefined, path: undefined, offset: undefined };
    if (next === "duration") base.duration = step.duration || { value: 1, unit: "days" };
    if (next === "time_of_day") base.time = step.time || "09:00";
    if (next === "date") {
      base.path = step.path || "";
      base.offset = step.offset || { value: 0, unit: "days" };
    }
    set(base);
  }
  const days = step.weekdays || [];
  return (
    <>
      <SelectField
        label="Wait"
        value={mode}
        options={[
          ["duration", "for a duration"],
          ["time_of_day", "until a time of day"],
          ["date", "until a date in the data"],
        ]}
        disabled={dis}
        problems={p("mode")}
        onChange={changeMode}
      />
      {mode === "duration" && (
        <SpanField label="Duration" value={step.duration} disabled={dis} problems={p("duration")} onChange={(v) => set({ duration: v })} />
      )}
      {mode === "time_of_day" && (
        <>
          <TextField
            label="Time of day (HH:MM, the user's timezone)"
            value={step.time}
            placeholder="09:00"
            disabled={dis}
            problems={p("time")}
            onChange={(v) => set({ time: v })}
          />
          <fieldset className="lje-field lje-weekdays">
            <legend>On weekdays (none ticked: any day)</legend>
            {WEEKDAYS.map((d) => (
              <CheckboxField
                key={d}
                label={d}
                checked={days.includes(d)}
                disabled={dis}
                onChange={(on) => {
                  const next = WEEKDAYS.filter((w) => (w === d ? on : days.includes(w)));
                  set({ weekdays: next.length ? next : undefined });
                }}
              />
            ))}
            <Problems problems={p("weekdays")} />
          </fieldset>
        </>
      )}
      {mode === "date" && (
        <>
          <TextField
            label="Date at (user.data.*, organization.data.*, event.data.*, run.data.*)"
            value={step.path}
            placeholder="user.data.trial_ends_at"
            disabled={dis}
            problems={p("path")}
            onChange={(v) => set({ path: v })}
          />
          <SpanField label="Offset (negative: before)" signed value={step.offset} disabled={dis} problems={p("offset")} onChange={(v) => set({ offset: v })} />
        </>
      )}
    </>
  );
}

function SplitForm({ step, set, p, dis }) {
  const branches = step.branches || [];
  const put = (n, patch) => set({ branches: branches.map((b, i) => (i === n ? { ...b, ...patch } : b)) });
  return (
    <fieldset className="lje-list">
      <legend>Branches (the first whose rule matches; else the default exit)</legend>
      {branches.map((b, n) => (
        <div key={n} className="lje-item">
          <TextField label={`Branch ${n + 1} name`} value={b.name} disabled={dis} problems={p(`branches[${n}].name`)} onChange={(v) => put(n, { name: v || undefined })} />
          <JsonField
            label={`Branch ${n + 1} rule (JSON)`}
            value={b.rule}
            check={checkRule}
            rows={4}
            disabled={dis}
            problems={p(`branches[${n}].rule`)}
            onChange={(v) => put(n, { rule: v })}
          />
          {!dis && branches.length > 1 && (
            <button type="button" onClick={() => set({ branches: branches.filter((_, i) => i !== n) })}>
              Remove branch {n + 1}
            </button>
          )}
        </div>
      ))}
      {!dis && branches.length < 20 && (
        <button
          type="button"
          onClick={() => set({ branches: [...branches, { name: `branch ${branches.length + 1}`, rule: { type: "property", path: "email", op: "exists" } }] })}
        >
          Add branch
        </button>
      )}
      <Problems problems={p("branches")} />
    </fieldset>
  );
}

function ExperimentForm({ step, set, p, dis }) {
  const variants = step.variants || [];
  const put = (n, patch) => set({ variants: variants.map((v, i) => (i === n ? { ...v, ...patch } : v)) });
  return (
    <fieldset className="lje-list">
      <legend>Variants (a random one by weight, fixed per run)</legend>
      {variants.map((v, n) => (
        <div key={n} className="lje-item lje-row">
          <TextField label={`Variant ${n + 1} name`} value={v.name} disabled={dis} problems={p(`variants[${n}].name`)} onChange={(x) => put(n, { name: x })} />
          <NumberField label={`Variant ${n + 1} weight`} value={v.weight} min={0} max={10000} disabled={dis} problems={p(`variants[${n}].weight`)} onChange={(x) => put(n, { weight: x })} />
          {!dis && variants.length > 1 && (
            <button type="button" aria-label={`Remove variant ${n + 1}`} onClick={() => set({ variants: variants.filter((_, i) => i !== n) })}>
              Remove
            </button>
          )}
        </div>
      ))}
      {!dis && variants.length < 20 && (
        <button type="button" onClick={() => set({ variants: [...variants, { name: String.fromCharCode(65 + variants.length), weight: 50 }] })}>
          Add variant
        </button>
      )}
      <Problems problems={p("variants")} />
    </fieldset>
  );
}

function WebhookForm({ step, set, p, dis }) {
  return (
    <>
      <SelectField
        label="Method"
        value={step.method || "POST"}
        options={["GET", "POST", "PUT", "PATCH", "DELETE"]}
        disabled={dis}
        problems={p("method")}
        onChange={(v) => set({ method: v })}
      />
      <TextField label="URL (a Liquid template)" type="url" value={step.url} required placeholder="https://" disabled={dis} problems={p("url")} onChange={(v) => set({ url: v })} />
      <JsonField
        label="Headers (JSON object of strings)"
        value={step.headers || {}}
        check={(v) => checkObject(v) || (Object.values(v).every((x) => typeof x === "string") ? null : "header values must be strings")}
        rows={3}
        disabled={dis}
        problems={p("headers")}
        onChange={(v) => set({ headers: v })}
      />
      <JsonField label="Body (JSON, optional; strings are templates)" value={step.body} optional disabled={dis} problems={p("body")} onChange={(v) => set({ body: v })} />
      <NumberField label="Timeout (seconds, at most 60)" value={step.timeout_seconds ?? 10} min={1} max={60} disabled={dis} problems={p("timeout_seconds")} onChange={(v) => set({ timeout_seconds: v })} />
      <NumberField label="Retries (at most 10)" value={step.retries ?? 3} min={0} max={10} disabled={dis} problems={p("retries")} onChange={(v) => set({ retries: v })} />
      <TextField
        label="Save the response as run.data.<name> (optional)"
        value={step.save_as}
        disabled={dis}
        problems={p("save_as")}
        onChange={(v) => set({ save_as: v || undefined })}
      />
    </>
  );
}

function GoalForm({ step, set, p, dis, listOptions }) {
  const byList = step.list_id !== undefined && step.list_id !== null;
  return (
    <>
      <SelectField
        label="Converted when the user"
        value={byList ? "list" : "event"}
        options={[
          ["event", "does an event"],
          ["list", "joins a list"],
        ]}
        disabled={dis}
        problems={p("goal")}
        onChange={(v) =>
          set(v === "list" ? { event: undefined, rule: undefined, list_id: "" } : { list_id: undefined, event: "" })
        }
      />
      {byList ? (
        <SelectField
          label="List"
          value={step.list_id}
          options={withCurrent(listOptions(false), step.list_id)}
          empty="(choose a list)"
          disabled={dis}
          problems={p("list_id")}
          onChange={(v) => set({ list_id: v || "" })}
        />
      ) : (
        <>
          <TextField label="Event name" value={step.event} required disabled={dis} problems={p("event")} onChange={(v) => set({ event: v })} />
          <JsonField
            label="Rule over the event (JSON, optional)"
            value={step.rule}
            optional
            check={checkRule}
            disabled={dis}
            problems={p("rule")}
            onChange={(v) => set({ rule: v })}
          />
        </>
      )}
    </>
  );
}
