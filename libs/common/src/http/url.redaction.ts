/** What replaces a credential in logs, spans and echoed values. */
export const REDACTED = '[redacted]';

/**
 * Words that make a query parameter's value a credential, matched against each word of its name
 * (split on `-`, `_`, `.` and brackets; any case): `api_key`, `x-api-key`, `access_token`,
 * `bearer`, `sk`, `api_key[]`, `auth[token]`…
 */
const SECRET_WORDS = new Set([
  'key', 'keys', 'apikey', 'token', 'tokens', 'accesstoken', 'auth', 'authorization', 'bearer', 'password', 'passwd', 'pwd',
  'secret', 'secrets', 'sk', 'credential', 'credentials', 'signature', 'sig', 'session', 'jwt',
]);

function isSecretName(name: string): boolean {
  const lower = name.trim().toLowerCase();
  if (SECRET_WORDS.has(lower.replace(/[-_.[\]\s]/g, ''))) return true;
  return lower.split(/[-_.[\]\s]+/).some((word) => SECRET_WORDS.has(word));
}

/**
 * Values shaped like a credential wherever they appear: keys in the `sk-…` family (this
 * platform's `sk-llm-…`, and other providers' `sk-proj-…`, `sk-ant-…`), and the value after
 * `Bearer` or `Basic` (an Authorization header copied into a URL, a header or a message).
 */
const SECRET_VALUE = /\bsk-[A-Za-z0-9][A-Za-z0-9_-]{6,}|\b(Bearer|Basic)(\s+|%20|\+)[A-Za-z0-9._~+/=-]{6,}/g;

/** Exact secrets known to this process (the API_KEYS), masked even when they do not look like one. */
const known = new Set<string>();
let knownPattern: RegExp | null = null;

/** Registers secrets (the static API_KEYS) that redactSecrets() masks by value, whatever their shape. */
export function registerSecrets(values: readonly string[]): void {
  for (const v of values) if (v.length >= 6) known.add(v);
  const escaped = [...known].sort((a, b) => b.length - a.length).map((v) => v.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  knownPattern = escaped.length ? new RegExp(escaped.join('|'), 'g') : null;
}

/** True when `text` holds something redactSecrets() would mask. */
export function looksSecret(text: string): boolean {
  SECRET_VALUE.lastIndex = 0;
  if (SECRET_VALUE.test(text)) return true;
  if (!knownPattern) return false;
  knownPattern.lastIndex = 0;
  return knownPattern.test(text);
}

/**
 * `text` with every credential-shaped value masked (see SECRET_VALUE, and the registered API_KEYS).
 * Applied to whole log lines, span attributes and error messages: a key that a client put in a
 * path, a query parameter, a header we echo or a prompt never reaches an output.
 */
export function redactSecrets(text: string): string {
  let out = text.replace(SECRET_VALUE, (match, scheme: string | undefined, space: string | undefined) =>
    scheme ? `${scheme}${space}${REDACTED}` : REDACTED,
  );
  if (knownPattern) out = out.replace(knownPattern, REDACTED);
  return out;
}

/**
 * The request URL as logged: the value of a credential-like query parameter is replaced by
 * `[redacted]`, and any credential-shaped value elsewhere (a key in the path) is masked. The server
 * reads keys only from headers, but a client that puts its key in the URL (`?api_key=sk-…`,
 * `/v1/sk-…/generate`) would otherwise have it written into every log line of the request.
 */
export function redactUrl(url: string): string {
  const q = url.indexOf('?');
  if (q < 0) return redactSecrets(url);
  const query = url
    .slice(q + 1)
    .split('&')
    .map((pair) => {
      const eq = pair.indexOf('=');
      const rawName = eq < 0 ? pair : pair.slice(0, eq);
      let name = rawName;
      try {
        name = decodeURIComponent(rawName.replace(/\+/g, ' '));
      } catch {
        /* a malformed escape: judge the raw name */
      }
      return eq >= 0 && isSecretName(name) ? `${rawName}=${REDACTED}` : pair;
    })
    .join('&');
  return redactSecrets(`${url.slice(0, q)}?${query}`);
}
