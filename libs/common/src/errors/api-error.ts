/**
 * OpenAI-style error types. Clients (the official SDKs included) switch on these, so every
 * error the platform emits carries one of them.
 */
export enum ErrorType {
  InvalidRequest = 'invalid_request_error',
  Authentication = 'authentication_error',
  Permission = 'permission_error',
  NotFound = 'not_found_error',
  RateLimit = 'rate_limit_error',
  Server = 'server_error',
  Unavailable = 'service_unavailable_error',
}

/** The body of every error response: `{"error": {...}}`. */
export interface ErrorEnvelope {
  error: {
    message: string;
    type: ErrorType;
    /** Machine-readable code, stable across releases (e.g. `context_length_exceeded`). */
    code: string;
    /** The offending request field, when one can be named. */
    param?: string | null;
    /** Per-field details for validation errors. */
    details?: { field: string; message: string }[];
  };
}

/** Where a code maps to: HTTP status and OpenAI-style type. */
export interface ErrorMapping {
  status: number;
  type: ErrorType;
}

/**
 * Base of every library's exception. Each library subclasses it once, with its own code enum
 * and an exhaustive `Record<Code, ErrorMapping>` table, so adding a code without choosing its
 * HTTP status is a compile error. The global filter renders any ApiError as the envelope.
 */
export abstract class ApiError<Code extends string = string> extends Error {
  readonly status: number;
  readonly type: ErrorType;

  protected constructor(
    readonly code: Code,
    mapping: ErrorMapping,
    message: string,
    readonly options: {
      param?: string | null;
      details?: { field: string; message: string }[];
      headers?: Record<string, string>;
      cause?: unknown;
    } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.status = mapping.status;
    this.type = mapping.type;
  }

  get headers(): Record<string, string> {
    return this.options.headers ?? {};
  }

  toEnvelope(): ErrorEnvelope {
    const error: ErrorEnvelope['error'] = { message: this.message, type: this.type, code: this.code };
    if (this.options.param !== undefined) error.param = this.options.param;
    if (this.options.details) error.details = this.options.details;
    return { error };
  }
}
