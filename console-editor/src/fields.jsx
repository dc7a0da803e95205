// Form controls for the side panel: each with a visible label tied to its control, the problems the server
// found for its field under it (aria-describedby), and nothing that needs a mouse.
import { useId, useState } from "react";
import { UNITS } from "./steps.js";

export function Problems({ id, problems }) {
  if (!problems || problems.length === 0) return null;
  return (
    <ul className="lje-field-problems" id={id} role="alert">
      {problems.map((p, n) => (
        <li key={n}>{p}</li>
      ))}
    </ul>
  );
}

function useField(problems) {
  const id = useId();
  const problemsId = `${id}-problems`;
  const invalid = problems && problems.length > 0;
  return { id, problemsId, invalid, describedBy: invalid ? problemsId : undefined };
}

export function TextField({ label, value, onChange, problems, disabled, placeholder, required, hint, type = "text" }) {
  const f = useField(problems);
  return (
    <div className="lje-field">
      <label htmlFor={f.id}>{label}</label>
      <input
        id={f.id}
        type={type}
        value={value ?? ""}
        placeholder={placeholder}
        required={required}
        disabled={disabled}
        aria-invalid={f.invalid || undefined}
        aria-describedby={f.describedBy}
        onChange={(e) => onChange(e.target.value)}
      />
      {hint && <p className="lje-hint">{hint}</p>}
      <Problems id={f.problemsId} problems={problems} />
    </div>
  );
}

export function NumberField({ label, value, onChange, problems, disabled, min, max, step = 1 }) {
  const f = useField(problems);
  return (
    <div className="lje-field">
      <label htmlFor={f.id}>{label}</label>
      <input
        id={f.id}
        type="number"
        value={value ?? ""}
        min={min}
        max={max}
        step={step}
        disabled={disabled}
        aria-invalid={f.invalid || undefined}
        aria-describedby={f.describedBy}
        onChange={(e) => onChange(e.target.value === "" ? null : Number(e.target.value))}
      />
      <Problems id={f.problemsId} problems={problems} />
    </div>
  );
}

export function SelectField({ label, value, onChange, options, problems, disabled, empty }) {
  const f = useField(problems);
  return (
    <div className="lje-field">
      <label htmlFor={f.id}>{label}</label>
      <select
        id={f.id}
        value={value ?? ""}
        disabled={disabled}
        aria-invalid={f.invalid || undefined}
        aria-describedby={f.describedBy}
        onChange={(e) => onChange(e.target.value === "" ? null : e.target.value)}
      >
        {empty !== undefined && <option value="">{empty}</option>}
        {options.map((o) => {
          const [v, text] = Array.isArray(o) ? o : [o, o];
          return (
            <option key={v} value={v}>
              {text}
            </option>
          );
        })}
      </select>
      <Problems id={f.problemsId} problems={problems} />
    </div>
  );
}

export function CheckboxField({ label, checked, onChange, disabled }) {
  const id = useId();
  return (
    <div className="lje-field lje-check">
      <input id={id} type="checkbox" checked={!!checked} disabled={disabled} onChange={(e) => onChange(e.target.checked)} />
      <label htmlFor={id}>{label}</label>
    </div>
  );
}

// {value, unit}: a number and a unit, in a fieldset whose legend names it.
export function SpanField({ label, value, onChange, problems, disabled, signed }) {
  const f = useField(problems);
  const span = value || { value: 0, unit: "days" };
  return (
    <fieldset className="lje-field lje-span" aria-describedby={f.describedBy}>
      <legend>{label}</legend>
      <label htmlFor={`${f.id}-v`} className="lje-sr">
        {label}: amount
      </label>
      <input
        id={`${f.id}-v`}
        type="number"
        value={span.value ?? ""}
        min={signed ? undefined : 0}
        disabled={disabled}
        aria-invalid={f.invalid || undefined}
        onChange={(e) => onChange({ ...span, value: e.target.value === "" ? 0 : Number(e.target.value) })}
      />
      <label htmlFor={`${f.id}-u`} className="lje-sr">
        {label}: unit
      </label>
      <select
        id={`${f.id}-u`}
        value={span.unit}
        disabled={disabled}
        onChange={(e) => onChange({ ...span, unit: e.target.value })}
      >
        {UNITS.map((u) => (
          <option key={u} value={u}>
            {u}
          </option>
        ))}
      </select>
      <Problems id={f.problemsId} problems={problems} />
    </fieldset>
  );
}

// JSON in a textarea: applied while it parses (and passes `check`), otherwise the error is shown and the
// step keeps its last good value. `optional`: an empty box means "none" (undefined).
export function JsonField({ label, value, onChange, problems, disabled, optional, check, hint, rows = 6 }) {
  const f = useField(problems);
  const shown = (v) => (v === undefined || v === null ? "" : JSON.stringify(v, null, 2));
  const [text, setText] = useState(shown(value));
  const [error, setError] = useState(null);
  const [lastValue, setLastValue] = useState(value);
  if (value !== lastValue) {
    // the step changed from elsewhere (another step selected, an undo): show it unless it is what we sent
    setLastValue(value);
    if (error === null && !sameJson(text, value)) setText(shown(value));
  }
  const errorId = `${f.id}-error`;
  function edit(next) {
    setText(next);
    if (optional && next.trim() === "") {
      setError(null);
      onChange(undefined);
      return;
    }
    let parsed;
    try {
      parsed = JSON.parse(next);
    } catch (err) {
      setError(`not valid JSON: ${err.message}`);
      return;
    }
    const problem = check ? check(parsed) : null;
    if (problem) {
      setError(problem);
      return;
    }
    setError(null);
    onChange(parsed);
  }
  const described = [error ? errorId : null, f.describedBy].filter(Boolean).join(" ") || undefined;
  return (
    <div className="lje-field">
      <label htmlFor={f.id}>{label}</label>
      <textarea
        id={f.id}
        className="lje-json"
        rows={rows}
        spellCheck={false}
        value={text}
        disabled={disabled}
        aria-invalid={error || f.invalid ? true : undefined}
        aria-describedby={described}
        onChange={(e) => edit(e.target.value)}
      />
      {hint && <p className="lje-hint">{hint}</p>}
      {error && (
        <p className="lje-json-error" id={errorId} role="alert">
          {error}
        </p>
      )}
      <Problems id={f.problemsId} problems={problems} />
    </div>
  );
}

function sameJson(text, value) {
  try {
    return JSON.stringify(JSON.parse(text)) === JSON.stringify(value);
  } catch {
    return false;
  }
}

const RULE_TYPES = ["all", "any", "property", "event", "organization", "list", "context", "visited"];

// A light check of a rule's shape before it goes to the server (which checks everything on save and
// validate): an object with a known type, groups with rules, every nested rule likewise.
export function checkRule(rule, at = "rule") {
  if (!rule || typeof rule !== "object" || Array.isArray(rule)) return `${at}: must be an object`;
  if (!RULE_TYPES.includes(rule.type)) return `${at}.type: must be one of ${RULE_TYPES.join(", ")}`;
  if (rule.type === "all" || rule.type === "any") {
    if (!Array.isArray(rule.rules) || rule.rules.length === 0) return `${at}.rules: must be a non-empty array`;
    for (let n = 0; n < rule.rules.length; n += 1) {
      const problem = checkRule(rule.rules[n], `${at}.rules[${n}]`);
      if (problem) return problem;
    }
  }
  if ((rule.type === "property" || rule.type === "context") && (typeof rule.path !== "string" || !rule.op)) {
    return `${at}: a ${rule.type} rule needs a path and an op`;
  }
  if (rule.type === "event" && !rule.name) return `${at}.name: an event rule needs the event's name`;
  if (rule.type === "visited" && !rule.step) return `${at}.step: a visited rule names a step`;
  return null;
}

export function checkObject(value) {
  return value && typeof value === "object" && !Array.isArray(value) ? null : "must be a JSON object";
}
