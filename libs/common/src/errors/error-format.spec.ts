import { CommonErrorCode, CommonException } from './common.exception';
import { errorFormatFor, registerErrorFormat, renderErrorFor } from './all-exceptions.filter';

describe('error formats per route', () => {
  const format = {
    matches: (path: string) => path.startsWith('/v1/other'),
    reshape: (r: { status: number; body: { error: { message: string } } }, requestId: string | undefined) => ({ status: r.status, body: { kind: 'error', text: r.body.error.message, requestId } }),
  };
  beforeAll(() => registerErrorFormat(format));

  it('reshapes errors on the matching paths only (query strings ignored), keeping status and headers', () => {
    const err = new CommonException(CommonErrorCode.PayloadTooLarge, 'too big', { headers: { 'Retry-After': '1' } });
    expect(renderErrorFor('/v1/other/x?y=1', err, 'req-1')).toEqual({ status: 413, headers: { 'Retry-After': '1' }, body: { kind: 'error', text: 'too big', requestId: 'req-1' } });
    expect(renderErrorFor('/v1/chat/completions', err).body).toEqual({ error: { message: 'too big', type: 'invalid_request_error', code: 'payload_too_large' } });
    expect(errorFormatFor(undefined)).toBeUndefined();
    // Registering the same format twice keeps one.
    registerErrorFormat(format);
    expect(errorFormatFor('/v1/other')).toBe(format);
  });
});
