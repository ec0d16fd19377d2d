import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { api, ApiError, session, whenUnauthorized } from './api';
import { KeysPage } from './keys.page';
import { LivePage } from './live.page';
import { PlaygroundPage } from './playground.page';
import { UsagePage } from './usage.page';
import './styles.css';

const PAGES = {
  keys: { title: 'Keys', view: KeysPage },
  usage: { title: 'Usage', view: UsagePage },
  live: { title: 'Models & live', view: LivePage },
  playground: { title: 'Playground', view: PlaygroundPage },
} as const;
type Page = keyof typeof PAGES;

/** The page is in the fragment (`#/usage`): never sent to the server, never holds the key. */
function currentPage(): Page {
  const name = location.hash.replace(/^#\/?/, '');
  return name in PAGES ? (name as Page) : 'keys';
}

function SignIn({ onSignedIn }: { onSignedIn: () => void }) {
  const [key, setKey] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  return (
    <main class="signin">
      <form
        class="card"
        aria-label="Sign in"
        onSubmit={async (e) => {
          e.preventDefault();
          setBusy(true);
          try {
            await api('GET', '/admin/status', undefined, key.trim());
            session.set(key.trim());
            onSignedIn();
          } catch (err) {
            setError(
              err instanceof ApiError && err.status === 403
                ? 'This key lacks the admin scope.'
                : err instanceof ApiError && err.status === 401
                  ? 'This key is not valid.'
                  : (err as Error).message,
            );
          } finally {
            setBusy(false);
          }
        }}
      >
        <h1>LLM console</h1>
        <p class="muted">Sign in with an API key that has the admin scope. It stays in this tab only (sessionStorage).</p>
        <label>
          Admin API key
          <input name="api-key" type="password" autocomplete="off" value={key} onInput={(e) => setKey((e.target as HTMLInputElement).value)} required />
        </label>
        {error && <p class="error">{error}</p>}
        <button type="submit" disabled={busy || key.trim() === ''}>
          Sign in
        </button>
      </form>
    </main>
  );
}

function App() {
  const [signedIn, setSignedIn] = useState(session.key !== null);
  const [page, setPage] = useState<Page>(currentPage());
  useEffect(() => {
    const onHash = (): void => setPage(currentPage());
    addEventListener('hashchange', onHash);
    whenUnauthorized(() => {
      session.clear();
      setSignedIn(false);
    });
    return () => removeEventListener('hashchange', onHash);
  }, []);
  if (!signedIn) return <SignIn onSignedIn={() => setSignedIn(true)} />;
  const View = PAGES[page].view;
  return (
    <>
      <header class="top">
        <span class="brand">LLM console</span>
        <nav>
          {(Object.keys(PAGES) as Page[]).map((p) => (
            <a key={p} href={`#/${p}`} class={p === page ? 'current' : ''} aria-current={p === page ? 'page' : undefined}>
              {PAGES[p].title}
            </a>
          ))}
        </nav>
        <button
          type="button"
          class="ghost small"
          onClick={() => {
            session.clear();
            setSignedIn(false);
          }}
        >
          Sign out
        </button>
      </header>
      <main class="content">
        <View />
      </main>
    </>
  );
}

render(<App />, document.getElementById('app') as HTMLElement);
