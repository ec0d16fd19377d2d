import { useEffect, useRef, useState } from 'preact/hooks';
import { api, ApiError, Status, stream } from './api';

interface Settings {
  model: string;
  system: string;
  prompt: string;
  temperature: string;
  top_p: string;
  top_k: string;
  max_tokens: string;
  seed: string;
}

interface Run {
  text: string;
  startedAt: number;
  firstAt: number | null;
  lastAt: number | null;
  chunks: number;
  completionTokens: number | null;
  promptTokens: number | null;
  finish: string | null;
  error: string | null;
  running: boolean;
}

const num = (v: string): number | undefined => (v.trim() === '' ? undefined : Number(v));

/** Decode rate: tokens after the first, over the time since the first (the first token's time is the prompt's). */
function rate(run: Run): string {
  const tokens = run.completionTokens ?? run.chunks;
  if (run.firstAt === null || run.lastAt === null || tokens < 2 || run.lastAt <= run.firstAt) return '—';
  return ((tokens - 1) / ((run.lastAt - run.firstAt) / 1000)).toFixed(1);
}

export function PlaygroundPage() {
  const [s, setS] = useState<Settings>({ model: '', system: '', prompt: 'Once upon a time', temperature: '0.8', top_p: '0.95', top_k: '40', max_tokens: '128', seed: '' });
  const [run, setRun] = useState<Run | null>(null);
  const abort = useRef<AbortController | null>(null);
  useEffect(() => {
    api<Status>('GET', '/admin/status').then(
      (st) => setS((cur) => ({ ...cur, model: cur.model || (st.models[0]?.id ?? '') })),
      () => undefined,
    );
    return () => abort.current?.abort();
  }, []);

  const start = async (): Promise<void> => {
    const controller = new AbortController();
    abort.current = controller;
    const messages = [...(s.system.trim() ? [{ role: 'system', content: s.system }] : []), { role: 'user', content: s.prompt }];
    const body = {
      model: s.model || undefined,
      messages,
      stream: true,
      stream_options: { include_usage: true },
      temperature: num(s.temperature),
      top_p: num(s.top_p),
      top_k: num(s.top_k),
      max_tokens: num(s.max_tokens),
      seed: num(s.seed),
    };
    let current: Run = { text: '', startedAt: performance.now(), firstAt: null, lastAt: null, chunks: 0, completionTokens: null, promptTokens: null, finish: null, error: null, running: true };
    setRun(current);
    try {
      for await (const event of stream('/v1/chat/completions', body, controller.signal)) {
        const choice = (event.choices as { delta?: { content?: string }; finish_reason?: string | null }[] | undefined)?.[0];
        const usage = event.usage as { completion_tokens: number; prompt_tokens: number } | null | undefined;
        const now = performance.now();
        const piece = choice?.delta?.content ?? '';
        current = {
          ...current,
          text: current.text + piece,
          chunks: current.chunks + (piece ? 1 : 0),
          firstAt: current.firstAt ?? (piece ? now : null),
          lastAt: piece ? now : current.lastAt,
          finish: choice?.finish_reason ?? current.finish,
          completionTokens: usage ? usage.completion_tokens : current.completionTokens,
          promptTokens: usage ? usage.prompt_tokens : current.promptTokens,
        };
        setRun(current);
      }
    } catch (err) {
      if (!controller.signal.aborted) current = { ...current, error: err instanceof ApiError ? `${err.message} (${err.code})` : (err as Error).message };
      else current = { ...current, finish: 'stopped' };
    }
    setRun({ ...current, running: false });
  };

  const field = (name: keyof Settings, label: string, attrs: Record<string, string> = {}) => (
    <label>
      {label}
      <input name={name} value={s[name]} onInput={(e) => setS({ ...s, [name]: (e.target as HTMLInputElement).value })} {...attrs} />
    </label>
  );
  return (
    <section>
      <div class="page-head">
        <h1>Playground</h1>
        <span class="muted">streams POST /v1/chat/completions with the signed-in key (it needs the generate scope)</span>
      </div>
      <div class="split">
        <form
          class="card"
          aria-label="Playground"
          onSubmit={(e) => {
            e.preventDefault();
            if (!run?.running) void start();
          }}
        >
          {field('model', 'Model')}
          <label>
            System prompt
            <textarea name="system" rows={2} value={s.system} onInput={(e) => setS({ ...s, system: (e.target as HTMLTextAreaElement).value })} />
          </label>
          <label>
            Message
            <textarea name="prompt" rows={4} value={s.prompt} onInput={(e) => setS({ ...s, prompt: (e.target as HTMLTextAreaElement).value })} />
          </label>
          <div class="fields compact">
            {field('temperature', 'Temperature', { inputMode: 'decimal' })}
            {field('top_p', 'Top p', { inputMode: 'decimal' })}
            {field('top_k', 'Top k', { inputMode: 'numeric' })}
            {field('max_tokens', 'Max tokens', { inputMode: 'numeric' })}
            {field('seed', 'Seed', { inputMode: 'numeric', placeholder: 'random' })}
          </div>
          <div class="row">
            <button type="submit" disabled={run?.running === true}>
              {run?.running ? 'Generating…' : 'Run'}
            </button>
            <button type="button" class="ghost" disabled={!run?.running} onClick={() => abort.current?.abort()}>
              Stop
            </button>
          </div>
        </form>
        <div class="card output-card">
          <div class="stats" aria-label="Run statistics">
            <span>
              <strong data-stat="tokens-per-second">{run ? rate(run) : '—'}</strong> tokens/s
            </span>
            <span>
              <strong>{run?.firstAt != null ? `${Math.round(run.firstAt - run.startedAt)} ms` : '—'}</strong> to first token
            </span>
            <span>
              <strong data-stat="completion-tokens">{run ? (run.completionTokens ?? run.chunks) : '—'}</strong> tokens
            </span>
            <span>
              finish <strong data-stat="finish">{run?.finish ?? '—'}</strong>
            </span>
          </div>
          {run?.error && <p class="error">{run.error}</p>}
          <pre class="output" aria-label="Completion" aria-live="polite">
            {run?.text ?? ''}
            {run?.running && <span class="cursor">▍</span>}
          </pre>
        </div>
      </div>
    </section>
  );
}
