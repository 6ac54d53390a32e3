/** A small SVG line plot for benchmark figures: a few named series over a shared numeric x axis. */

export interface PlotSeries {
  name: string;
  color: string;
  dashed?: boolean;
  /** [x, y] pairs, drawn in the order given. */
  points: readonly (readonly [number, number])[];
}

export interface LinePlot {
  title: string;
  xLabel: string;
  yLabel: string;
  series: readonly PlotSeries[];
  width?: number;
  height?: number;
}

/** The plot as a standalone SVG document: axes from 0, a tick at every x that has a point, a legend. */
export function linePlotSvg(p: LinePlot): string {
  const W = p.width ?? 720;
  const H = p.height ?? 360;
  const pad = { left: 56, right: 160, top: 32, bottom: 44 };
  const all = p.series.flatMap((s) => s.points);
  const maxX = Math.max(1, ...all.map(([x]) => x));
  const maxY = Math.max(1e-9, ...all.map(([, y]) => y)) * 1.1;
  const x = (v: number) => pad.left + ((W - pad.left - pad.right) * v) / maxX;
  const y = (v: number) => H - pad.bottom - ((H - pad.top - pad.bottom) * v) / maxY;
  const xs = [...new Set(all.map(([v]) => v))].sort((a, b) => a - b);
  const xTicks = xs.map(
    (v) =>
      `<text x="${x(v).toFixed(1)}" y="${H - pad.bottom + 14}" font-size="10" text-anchor="middle">${v}</text>`,
  );
  const yTicks = [0, 0.25, 0.5, 0.75, 1].map((f) => {
    const v = maxY * f;
    return [
      `<line x1="${pad.left}" y1="${y(v).toFixed(1)}" x2="${W - pad.right}" y2="${y(v).toFixed(1)}" stroke="#eee"/>`,
      `<text x="${pad.left - 6}" y="${(y(v) + 3).toFixed(1)}" font-size="10" text-anchor="end">${label(v)}</text>`,
    ].join('\n');
  });
  const lines = p.series.flatMap((s) => [
    `<polyline fill="none" stroke="${s.color}" stroke-width="1.8"${s.dashed ? ' stroke-dasharray="5 4"' : ''} points="${s.points.map(([a, b]) => `${x(a).toFixed(1)},${y(b).toFixed(1)}`).join(' ')}"/>`,
    ...s.points.map(
      ([a, b]) => `<circle cx="${x(a).toFixed(1)}" cy="${y(b).toFixed(1)}" r="2.5" fill="${s.color}"/>`,
    ),
  ]);
  const legend = p.series.flatMap((s, i) => {
    const ly = pad.top + 8 + i * 18;
    const lx = W - pad.right + 14;
    return [
      `<line x1="${lx}" y1="${ly}" x2="${lx + 24}" y2="${ly}" stroke="${s.color}" stroke-width="1.8"${s.dashed ? ' stroke-dasharray="5 4"' : ''}/>`,
      `<text x="${lx + 30}" y="${ly + 4}" font-size="11">${escape(s.name)}</text>`,
    ];
  });
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${pad.left}" y="18" font-size="12">${escape(p.title)}</text>`,
    ...yTicks,
    `<line x1="${pad.left}" y1="${H - pad.bottom}" x2="${W - pad.right}" y2="${H - pad.bottom}" stroke="#888"/>`,
    `<line x1="${pad.left}" y1="${pad.top}" x2="${pad.left}" y2="${H - pad.bottom}" stroke="#888"/>`,
    ...xTicks,
    `<text x="${(pad.left + W - pad.right) / 2}" y="${H - 8}" font-size="11" text-anchor="middle">${escape(p.xLabel)}</text>`,
    `<text x="14" y="${(pad.top + H - pad.bottom) / 2}" font-size="11" text-anchor="middle" transform="rotate(-90 14 ${(pad.top + H - pad.bottom) / 2})">${escape(p.yLabel)}</text>`,
    ...lines,
    ...legend,
    '</svg>',
    '',
  ].join('\n');
}

function label(v: number): string {
  return v >= 10 ? v.toFixed(0) : v.toFixed(1);
}

function escape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}
