// A step on the graph: its type, key and what it does, one source handle per exit (labelled), the
// problems the server found on it, its live counts, and the shown path's visits with their reasons.
import { memo } from "react";
import { Handle, Position } from "@xyflow/react";
import { canEnter, describeOutcome, exitsOf, summary, typeLabel } from "./steps.js";

function StepNodeInner({ id, data }) {
  const { step, problems, counts, trail, names, readOnly } = data;
  const exits = exitsOf(step);
  const classes = ["lje-node", `lje-node-${step.type}`];
  if (problems.length) classes.push("lje-has-problems");
  if (trail.length) classes.push(`lje-on-trail lje-trail-${trail[0].kind}`);
  return (
    <div className={classes.join(" ")} data-step={id} data-type={step.type}>
      {canEnter(step) && <Handle type="target" position={Position.Top} isConnectable={!readOnly} aria-label={`into ${id}`} />}
      <div className="lje-node-head">
        <span className="lje-node-type">{typeLabel(step)}</span>
        {problems.length > 0 && (
          <span className="lje-badge lje-badge-problems" title={problems.map((p) => `${p.field}: ${p.message}`).join("\n")}>
            {problems.length} problem{problems.length > 1 ? "s" : ""}
          </span>
        )}
      </div>
      <div className="lje-node-key">{step.name ? `${step.name} (${id})` : id}</div>
      <div className="lje-node-summary">{summary(step, names)}</div>
      {problems.length > 0 && (
        <ul className="lje-node-problems">
          {problems.slice(0, 2).map((p, n) => (
            <li key={n}>
              {p.field ? `${p.field}: ` : ""}
              {p.message}
            </li>
          ))}
          {problems.length > 2 && <li>and {problems.length - 2} more</li>}
        </ul>
      )}
      {counts && (
        <div className="lje-node-counts" aria-label={`live counts of ${id}`}>
          <span className="lje-count" data-count="through" title="runs through this step (live version)">
            {counts.through} through
          </span>
          <span className="lje-count" data-count="in_step" title="runs on this step now">
            {counts.inStep} here
          </span>
        </div>
      )}
      {trail.length > 0 && (
        <ol className="lje-node-trail">
          {trail.map((t, n) => (
            <li key={n} data-outcome={t.outcome}>
              <span className="lje-trail-order">{t.order}</span> {describeOutcome(t.outcome, t.detail)}
            </li>
          ))}
        </ol>
      )}
      {exits.length > 0 && (
        <div className="lje-node-exits">
          {exits.map((exit, n) => (
            <div key={exit.handle} className="lje-exit" style={{ left: `${((n + 1) * 100) / (exits.length + 1)}%` }}>
              <span className="lje-exit-label">{exit.label}</span>
              <Handle
                type="source"
                id={exit.handle}
                position={Position.Bottom}
                isConnectable={!readOnly}
                aria-label={`exit ${exit.label} of ${id}`}
              />
            </div>
          ))}
        </div>
      )}
    </div>
  );
}

export const StepNode = memo(StepNodeInner);
