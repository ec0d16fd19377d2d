import { useEffect, useState } from 'preact/hooks';
import { api, ApiError, KeyView } from './api';
import { limit, when } from './format';

const SCOPES = ['generate', 'retrieval', 'admin'] as const;

interface Form {
  name: string;
  scopes: string[];
  rpm: string;
  tpm: string;
  concurrency: string;
  budget_day: string;
  budget_month: string;
  priority: string;
  expires: string;
}

const EMPTY: Form = { name: '', scopes: ['generate'], rpm: '', tpm: '', concurrency: '', budget_day: '', budget_month: '', priority: 'normal', expires: '' };

/** Numbers typed in the form: empty = not sent (the server's default, or unchanged). */
function settings(f: Form): Record<string, unknown> {
  const out: Record<string, unknown> = { scopes: f.scopes, priority: f.priority };
  for (const k of ['rpm', 'tpm', 'concurrency', 'budget_day', 'budget_month'] as const) {
    if (f[k].trim() !== '') out[k] = Number(f[k].trim());
  }
  if (f.expires.trim() !== '') out.expires = f.expires.trim();
  return out;
}

function formOf(k: KeyView): Form {
  return {
    name: k.name,
    scopes: [...k.scopes],
    rpm: String(k.limits.rpm),
    tpm: String(k.limits.tpm),
    concurrency: String(k.limits.concurrency),
    budget_day: String(k.budget.day),
    budget_month: String(k.budget.month),
    priority: k.priority,
    expires: '',
  };
}

function KeyFields({ form, set, withName }: { form: Form; set: (f: Form) => void; withName: boolean }) {
  const field = (name: keyof Form, label: string, hint: string) => (
    <label>
      {label}
      <input
        name={name}
        value={form[name] as string}
        placeholder={hint}
        inputMode={name === 'name' || name === 'expires' ? undefined : 'numeric'}
        onInput={(e) => set({ ...form, [name]: (e.target as HTMLInputElement).value })}
      />
    </label>
  );
  return (
    <div class="fields">
      {withName && field('name', 'Name', 'team-a')}
      <fieldset class="scopes">
        <legend>Scopes</legend>
        {SCOPES.map((s) => (
          <label key={s} class="check">
            <input
              type="checkbox"
              name={`scope-${s}`}
              checked={form.scopes.includes(s)}
              onChange={(e) =>
                set({ ...form, scopes: (e.target as HTMLInputElement).checked ? [...form.scopes, s] : form.scopes.filter((x) => x !== s) })
              }
            />
            {s}
          </label>
        ))}
      </fieldset>
      {field('rpm', 'Requests / window', 'default')}
      {field('tpm', 'Tokens / window', 'default')}
      {field('concurrency', 'Concurrency', 'default')}
      {field('budget_day', 'Budget / day (tokens)', '0 = none')}
      {field('budget_month', 'Budget / month (tokens)', '0 = none')}
      <label>
        Priority
        <select name="priority" value={form.priority} onChange={(e) => set({ ...form, priority: (e.target as HTMLSelectElement).value })}>
          <option value="low">low</option>
          <option value="normal">normal</option>
          <option value="high">high</option>
        </select>
      </label>
      {field('expires', 'Expires', '30d, 2027-01-31, never')}
    </div>
  );
}

/** A secret shown once, after create or rotate. */
function Secret({ issued, onClose }: { issued: KeyView; onClose: () => void }) {
  const [copied, setCopied] = useState(false);
  return (
    <div class="secret" role="alert">
      <p>
        Key <strong>{issued.name}</strong> ({issued.id}). This is the only time it is shown: store it now.
      </p>
      <code class="secret-value">{issued.key}</code>
      <div class="row">
        <button
          type="button"
          onClick={async () => {
            await navigator.clipboard?.writeText(issued.key ?? '').catch(() => undefined);
            setCopied(true);
          }}
        >
          {copied ? 'Copied' : 'Copy'}
        </button>
        <button type="button" class="ghost" onClick={onClose}>
          Done
        </button>
      </div>
    </div>
  );
}

export function KeysPage() {
  const [keys, setKeys] = useState<KeyView[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [creating, setCreating] = useState<Form | null>(null);
  const [editing, setEditing] = useState<{ id: string; form: Form } | null>(null);
  const [issued, setIssued] = useState<KeyView | null>(null);
  const [showRevoked, setShowRevoked] = useState(false);

  const load = async (): Promise<void> => {
    try {
      setKeys((await api<{ data: KeyView[] }>('GET', '/admin/keys')).data);
      setError(null);
    } catch (err) {
      setError((err as Error).message);
    }
  };
  useEffect(() => void load(), []);

  const act = async (work: () => Promise<void>): Promise<void> => {
    try {
      await work();
      setError(null);
    } catch (err) {
      setError(err instanceof ApiError ? `${err.message} (${err.code})` : (err as Error).message);
    }
    await load();
  };

  const shown = (keys ?? []).filter((k) => showRevoked || k.status !== 'revoked');
  return (
    <section>
      <div class="page-head">
        <h1>API keys</h1>
        <div class="row">
          <label class="check">
            <input type="checkbox" checked={showRevoked} onChange={(e) => setShowRevoked((e.target as HTMLInputElement).checked)} />
            show revoked
          </label>
          <button type="button" onClick={() => setCreating({ ...EMPTY })} disabled={creating !== null}>
            New key
          </button>
        </div>
      </div>
      {error && <p class="error">{error}</p>}
      {issued && <Secret issued={issued} onClose={() => setIssued(null)} />}
      {creating && (
        <form
          class="card"
          aria-label="Create key"
          onSubmit={(e) => {
            e.preventDefault();
            void act(async () => {
              const created = await api<KeyView>('POST', '/admin/keys', { name: creating.name.trim(), ...settings(creating) });
              setIssued(created);
              setCreating(null);
            });
          }}
        >
          <h2>New key</h2>
          <KeyFields form={creating} set={setCreating} withName />
          <div class="row">
            <button type="submit">Create</button>
            <button type="button" class="ghost" onClick={() => setCreating(null)}>
              Cancel
            </button>
          </div>
        </form>
      )}
      {keys === null ? (
        <p class="muted">Loading…</p>
      ) : (
        <table class="table" aria-label="Keys">
          <thead>
            <tr>
              <th>Name</th>
              <th>Key</th>
              <th>Status</th>
              <th>Scopes</th>
              <th class="num">RPM</th>
              <th class="num">TPM</th>
              <th class="num">Conc.</th>
              <th class="num">Budget/day</th>
              <th class="num">Budget/month</th>
              <th>Priority</th>
              <th>Last used</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {shown.map((k) =>
              editing?.id === k.id ? (
                <tr key={k.id} class="editing">
                  <td colSpan={12}>
                    <form
                      aria-label={`Edit ${k.name}`}
                      onSubmit={(e) => {
                        e.preventDefault();
                        void act(async () => {
                          await api('PATCH', `/admin/keys/${k.id}`, settings(editing.form));
                          setEditing(null);
                        });
                      }}
                    >
                      <strong>{k.name}</strong>
                      <KeyFields form={editing.form} set={(form) => setEditing({ id: k.id, form })} withName={false} />
                      <div class="row">
                        <button type="submit">Save</button>
                        <button type="button" class="ghost" onClick={() => setEditing(null)}>
                          Cancel
                        </button>
                      </div>
                    </form>
                  </td>
                </tr>
              ) : (
                <tr key={k.id} data-key={k.name} class={k.status !== 'active' ? 'inactive' : ''}>
                  <td>
                    <strong>{k.name}</strong>
                    <div class="muted small">{k.id}</div>
                  </td>
                  <td>
                    <code>{k.hint}</code>
                  </td>
                  <td>
                    <span class={`badge ${k.status}`}>{k.status}</span>
                  </td>
                  <td>{k.scopes.join(', ')}</td>
                  <td class="num">{limit(k.limits.rpm)}</td>
                  <td class="num">{limit(k.limits.tpm)}</td>
                  <td class="num">{limit(k.limits.concurrency)}</td>
                  <td class="num">{k.budget.day ? limit(k.budget.day) : '—'}</td>
                  <td class="num">{k.budget.month ? limit(k.budget.month) : '—'}</td>
                  <td>{k.priority}</td>
                  <td>{when(k.last_used_at)}</td>
                  <td class="actions">
                    {k.status !== 'revoked' && (
                      <>
                        <button type="button" class="small ghost" onClick={() => setEditing({ id: k.id, form: formOf(k) })}>
                          Edit
                        </button>
                        <button
                          type="button"
                          class="small ghost"
                          onClick={() => {
                            if (confirm(`Rotate "${k.name}"? The current secret stops working.`)) void act(async () => setIssued(await api<KeyView>('POST', `/admin/keys/${k.id}/rotate`)));
                          }}
                        >
                          Rotate
                        </button>
                        <button
                          type="button"
                          class="small danger"
                          onClick={() => {
                            if (confirm(`Revoke "${k.name}"? Requests with it fail from now on.`)) void act(async () => void (await api('DELETE', `/admin/keys/${k.id}`)));
                          }}
                        >
                          Revoke
                        </button>
                      </>
                    )}
                  </td>
                </tr>
              ),
            )}
            {shown.length === 0 && (
              <tr>
                <td colSpan={12} class="muted">
                  No keys yet.
                </td>
              </tr>
            )}
          </tbody>
        </table>
      )}
    </section>
  );
}
