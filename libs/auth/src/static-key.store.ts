import { Injectable, Logger, OnModuleInit } from '@nestjs/common';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AppConfig } from '@app/common';

/** Recognisable prefix of keys this platform generates. */
export const KEY_PREFIX = 'sk-llm-';

export function hashKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

/** A key's public id for logs and traces: a prefix of its SHA-256, which does not reveal the key. */
export function keyId(key: string): string {
  return `key_${hashKey(key).slice(0, 12)}`;
}

export function generateKey(): string {
  return KEY_PREFIX + randomBytes(24).toString('base64url');
}

/**
 * Keys from API_KEYS, held only as SHA-256 hashes. With no API_KEYS (and auth not disabled) a
 * development key is generated once into DATA_DIR/dev-api-key (mode 0600), so that a fresh
 * install is never open yet needs no setup; its value is never logged.
 */
@Injectable()
export class StaticKeyStore implements OnModuleInit {
  readonly #logger = new Logger('Auth');
  readonly #hashes = new Set<string>();

  constructor(private readonly config: AppConfig) {}

  onModuleInit(): void {
    for (const key of this.config.apiKeys) this.#hashes.add(hashKey(key));
    if (this.#hashes.size > 0 || this.config.authDisabled) {
      if (this.config.authDisabled) this.#logger.warn('AUTH_DISABLED=true: generation routes accept requests without a key');
      return;
    }
    const file = join(this.config.dataDir, 'dev-api-key');
    if (!existsSync(file)) {
      mkdirSync(this.config.dataDir, { recursive: true });
      writeFileSync(file, `${generateKey()}\n`, { mode: 0o600 });
      chmodSync(file, 0o600);
      this.#logger.warn(`No API_KEYS set: generated a development key in ${file} (export API_KEY=$(cat ${file}))`);
    } else {
      this.#logger.log(`No API_KEYS set: using the development key in ${file}`);
    }
    this.#hashes.add(hashKey(readFileSync(file, 'utf8').trim()));
  }

  get disabled(): boolean {
    return this.config.authDisabled;
  }

  has(key: string): boolean {
    return this.#hashes.has(hashKey(key));
  }
}
