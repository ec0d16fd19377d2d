/**
 * Whether debug lines are written at all. Set once when the logger is built (LOG_LEVEL); hot
 * paths (the scheduler's steps, cache lookups, the rate limiter) test it before building a
 * message, so that debug logging costs one boolean read when it is off.
 */
let debugOn = false;

export function debugEnabled(): boolean {
  return debugOn;
}

export function setDebugEnabled(level: string): void {
  debugOn = level === 'debug' || level === 'trace';
}
