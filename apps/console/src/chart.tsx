import { short } from './format';

export interface Series {
  readonly name: string;
  /** One value per x label. */
  readonly values: readonly number[];
}

/** Eight colours that stay apart for the usual colour-vision deficiencies (Okabe–Ito order). */
export const PALETTE = ['#0072b2', '#e69f00', '#009e73', '#cc79a7', '#56b4e9', '#d55e00', '#f0e442', '#7f7f7f'];

function ticks(max: number): number[] {
  if (max <= 0) return [0];
  const step0 = max / 4;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => s >= step0) ?? step0;
  const out: number[] = [];
  for (let v = 0; v <= max + step * 0.001; v += step) out.push(v);
  if (out[out.length - 1] < max) out.push(out[out.length - 1] + step);
  return out;
}

/**
 * A stacked bar chart in plain SVG (no chart library, no inline styles: the CSP allows neither
 * and neither is needed). Each bar has a tooltip with its value per series.
 */
export function StackedBars({ labels, series, unit }: { labels: readonly string[]; series: readonly Series[]; unit: string }) {
  const width = 920;
  const height = 280;
  const pad = { left: 56, right: 12, top: 12, bottom: 40 };
  const totals = labels.map((_, i) => series.reduce((s, x) => s + (x.values[i] ?? 0), 0));
  const ys = ticks(Math.max(0, ...totals));
  const top = ys[ys.length - 1] || 1;
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const slot = plotW / Math.max(1, labels.length);
  const barW = Math.max(2, Math.min(48, slot * 0.7));
  const y = (v: number): number => pad.top + plotH - (v / top) * plotH;
  const every = Math.max(1, Math.ceil(labels.length / 12));
  return (
    <svg class="chart" viewBox={`0 0 ${width} ${height}`} role="img" aria-label={`${unit} per period`}>
      {ys.map((v) => (
        <g key={v}>
          <line class="grid" x1={pad.left} x2={width - pad.right} y1={y(v)} y2={y(v)} />
          <text class="tick" x={pad.left - 6} y={y(v) + 4} text-anchor="end">
            {short(v)}
          </text>
        </g>
      ))}
      {labels.map((label, i) => {
        let base = 0;
        const x = pad.left + i * slot + (slot - barW) / 2;
        return (
          <g key={label}>
            {series.map((s, k) => {
              const v = s.values[i] ?? 0;
              if (v <= 0) return null;
              const rect = <rect x={x} y={y(base + v)} width={barW} height={Math.max(0.5, y(base) - y(base + v))} fill={PALETTE[k % PALETTE.length]}>
                <title>{`${label} · ${s.name}: ${v.toLocaleString('en-US')} ${unit}`}</title>
              </rect>;
              base += v;
              return rect;
            })}
            {i % every === 0 && (
              <text class="tick" x={x + barW / 2} y={height - pad.bottom + 16} text-anchor="middle">
                {label}
              </text>
            )}
          </g>
        );
      })}
      <line class="axis" x1={pad.left} x2={width - pad.right} y1={y(0)} y2={y(0)} />
    </svg>
  );
}

export function Legend({ series }: { series: readonly Series[] }) {
  return (
    <ul class="legend">
      {series.map((s, k) => (
        <li key={s.name}>
          <svg width="12" height="12" aria-hidden="true">
            <rect width="12" height="12" rx="2" fill={PALETTE[k % PALETTE.length]} />
          </svg>
          {s.name}
        </li>
      ))}
    </ul>
  );
}

/** A horizontal gauge: `value` of `max`, as an SVG bar. */
export function Meter({ value, max, label }: { value: number; max: number; label: string }) {
  const ratio = max > 0 ? Math.min(1, value / max) : 0;
  return (
    <div class="meter">
      <div class="meter-head">
        <span>{label}</span>
        <strong>
          {short(value)} / {short(max)}
        </strong>
      </div>
      <svg viewBox="0 0 100 8" preserveAspectRatio="none" aria-hidden="true">
        <rect class="meter-track" width="100" height="8" rx="4" />
        <rect class={ratio > 0.9 ? 'meter-fill hot' : 'meter-fill'} width={Math.max(0, ratio * 100)} height="8" rx="4" />
      </svg>
    </div>
  );
}
