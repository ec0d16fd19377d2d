import type { LoggerService } from '@nestjs/common';

/**
 * Framework bookkeeping that says nothing to an operator once the server works: module
 * initialisation, each mapped route (~55 lines), "Starting Nest application". Written at debug.
 */
const FRAMEWORK_CONTEXTS = new Set(['NestFactory', 'InstanceLoader', 'RoutesResolver', 'RouterExplorer', 'NestApplication']);

/**
 * Nest's logger for the app: the pino logger, with the framework's start-up chatter moved to
 * debug. "Nest application successfully started" is said when the port opens, before the model
 * has loaded (it may still fail), so it becomes a debug line saying just that; the start-up
 * summary that main.ts logs once the model is ready is the line that means "started".
 */
export class AppLogger implements LoggerService {
  constructor(private readonly inner: LoggerService) {}

  log(message: unknown, ...rest: unknown[]): void {
    const context = rest[rest.length - 1];
    if (typeof context === 'string' && FRAMEWORK_CONTEXTS.has(context)) {
      const text = context === 'NestApplication' && message === 'Nest application successfully started' ? 'HTTP server listening (model not necessarily loaded yet)' : message;
      this.inner.debug?.(text, ...rest);
      return;
    }
    this.inner.log(message, ...rest);
  }

  error(message: unknown, ...rest: unknown[]): void {
    this.inner.error(message, ...rest);
  }

  warn(message: unknown, ...rest: unknown[]): void {
    this.inner.warn(message, ...rest);
  }

  debug(message: unknown, ...rest: unknown[]): void {
    this.inner.debug?.(message, ...rest);
  }

  verbose(message: unknown, ...rest: unknown[]): void {
    this.inner.verbose?.(message, ...rest);
  }

  fatal(message: unknown, ...rest: unknown[]): void {
    (this.inner.fatal ?? this.inner.error).call(this.inner, message, ...rest);
  }
}
