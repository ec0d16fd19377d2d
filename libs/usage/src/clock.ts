import { Injectable } from '@nestjs/common';

/**
 * The time as the usage library sees it: hour buckets of the ledger and budget periods (UTC days
 * and months). Injectable so that tests can cross a period boundary without waiting for it.
 */
@Injectable()
export class Clock {
  /** Milliseconds since the epoch. */
  now(): number {
    return Date.now();
  }
}

/** A clock that only moves when told to: `new ManualClock(Date.parse('2026-01-31T23:59:00Z'))`. */
export class ManualClock extends Clock {
  constructor(private at: number) {
    super();
  }

  override now(): number {
    return this.at;
  }

  set(at: number): void {
    this.at = at;
  }

  advance(ms: number): void {
    this.at += ms;
  }
}

export const HOUR_MS = 3_600_000;
export const DAY_MS = 86_400_000;

/** Start of the UTC hour holding `at`. */
export function hourOf(at: number): number {
  return Math.floor(at / HOUR_MS) * HOUR_MS;
}

/** Start of the UTC day holding `at`. */
export function dayOf(at: number): number {
  return Math.floor(at / DAY_MS) * DAY_MS;
}
