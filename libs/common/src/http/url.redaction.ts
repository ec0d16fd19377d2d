/** Query parameters whose value is a credential, whatever the route (matched case-insensitively). */
const SECRET_PARAM = /^(api[-_]?key|key|token|access[-_]?token|auth|authorization|password|secret)$/i;

/**
 * The request URL as logged: the value of a credential-like query parameter is replaced by
 * `[redacted]`. The server reads keys only from headers, but a client that puts its key in the
 * query string (`?api_key=sk-…`) would otherwise have it written into every log line of the request.
 */
export function redactUrl(url: string): string {
  const q = url.indexOf('?');
  if (q < 0) return url;
  const query = url
    .slice(q + 1)
    .split('&')
    .map((pair) => {
      const eq = pair.indexOf('=');
      const rawName = eq < 0 ? pair : pair.slice(0, eq);
      let name = rawName;
      try {
        name = decodeURIComponent(rawName);
      } catch {
        /* a malformed escape: judge the raw name */
      }
      return eq >= 0 && SECRET_PARAM.test(name.trim()) ? `${rawName}=[redacted]` : pair;
    })
    .join('&');
  return `${url.slice(0, q)}?${query}`;
}
