/**
 * One stored Responses API response: what `GET /v1/responses/{id}` returns, the request's own
 * input items (`GET /v1/responses/{id}/input_items`) and the whole conversation it answered
 * (`previous_response_id` continues from it). Only the key that created it can read or delete it.
 */
export interface StoredResponse {
  /** `resp_…` */
  readonly id: string;
  /** The creating key's id (`key_…`, `static:…`, `anonymous`). */
  readonly keyId: string;
  /** Epoch ms. */
  readonly createdAt: number;
  /** Epoch ms after which it is gone (RESPONSES_RETENTION_SECONDS after creation). */
  readonly expiresAt: number;
  readonly previousId: string | null;
  /** This request's input items, as stored (each with its id). */
  readonly input: readonly unknown[];
  /** The conversation before the output: the previous response's context and output, then `input`. */
  readonly context: readonly unknown[];
  /** The response object. */
  readonly response: Record<string, unknown>;
}
