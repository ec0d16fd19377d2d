import { Logger } from '@nestjs/common';
import express from 'express';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import helmet from 'helmet';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { projectRoot } from '@app/common';

/** Where `npm run build` puts the console's bundle (scripts/build-console.js). */
export const CONSOLE_DIR = join(projectRoot(), 'dist', 'console');

/**
 * The console's Content-Security-Policy: its own scripts, styles and API only. No inline script or
 * style, no eval, no other origin (so nothing loads from a CDN and an injected tag cannot run or
 * send the admin key elsewhere), not framable, no forms posting anywhere, no <base> rewriting.
 */
export const CONSOLE_CSP = {
  useDefaults: false,
  directives: {
    defaultSrc: ["'none'"],
    scriptSrc: ["'self'"],
    styleSrc: ["'self'"],
    imgSrc: ["'self'", 'data:'],
    fontSrc: ["'self'"],
    connectSrc: ["'self'"],
    manifestSrc: ["'self'"],
    baseUri: ["'none'"],
    formAction: ["'none'"],
    frameAncestors: ["'none'"],
    objectSrc: ["'none'"],
  },
};

/**
 * `/console`: the operator web console, static files built at `npm run build`, under a strict CSP
 * of its own (the API's routes keep theirs). Public like any web page: it holds no data and
 * every API call it makes carries the admin key the operator types in.
 */
export function consoleHandlers(): RequestHandler[] {
  if (!existsSync(join(CONSOLE_DIR, 'index.html'))) {
    new Logger('Console').warn(`Console not built (${CONSOLE_DIR} missing): run npm run build; /console answers 404 until then`);
  }
  const noStore = (_req: Request, res: Response, next: NextFunction): void => {
    // Small files: always revalidated (ETag), so a new build shows at the next load.
    res.setHeader('Cache-Control', 'no-cache');
    next();
  };
  return [helmet.contentSecurityPolicy(CONSOLE_CSP), noStore, express.static(CONSOLE_DIR, { index: 'index.html', redirect: true, fallthrough: true })];
}
