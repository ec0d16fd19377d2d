const GROUPED = new Intl.NumberFormat('en-US');

export const n = (v: number): string => GROUPED.format(v);

/** 1234567 → 1.23M: for axis ticks and tight spaces. */
export function short(v: number): string {
  const abs = Math.abs(v);
  if (abs >= 1e9) return `${(v / 1e9).toFixed(abs >= 1e10 ? 0 : 1)}G`;
  if (abs >= 1e6) return `${(v / 1e6).toFixed(abs >= 1e7 ? 0 : 1)}M`;
  if (abs >= 1e3) return `${(v / 1e3).toFixed(abs >= 1e4 ? 0 : 1)}k`;
  return String(Math.round(v * 100) / 100);
}

export const limit = (v: number): string => (v === 0 ? '∞' : short(v));

export function when(iso: string | null): string {
  if (!iso) return '—';
  return iso.slice(0, 16).replace('T', ' ');
}

export function bytes(v: number | undefined): string {
  if (v === undefined) return '—';
  if (v >= 1024 ** 3) return `${(v / 1024 ** 3).toFixed(1)} GiB`;
  if (v >= 1024 ** 2) return `${(v / 1024 ** 2).toFixed(1)} MiB`;
  return `${(v / 1024).toFixed(0)} KiB`;
}
