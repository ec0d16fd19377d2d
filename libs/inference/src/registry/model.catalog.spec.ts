import { copyFileSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AppConfig, BUNDLED_MODEL } from '@app/common';
import { GgufType } from '../gguf/gguf.format';
import { writeGguf } from '../gguf/gguf.writer';
import { buildCatalog, detectKind, idFromFileName, ModelCatalogError, scanModelsDir } from './model.catalog';

function dirWith(...files: string[]): string {
  const dir = mkdtempSync(join(tmpdir(), 'catalog-'));
  for (const f of files) copyFileSync(BUNDLED_MODEL, join(dir, f));
  return dir;
}

function modelsFile(dir: string, name: string, text: string): string {
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
}

/** A GGUF holding only metadata (no tensors): enough for kind detection. */
function metadataOnly(path: string, entries: [string, GgufType, string | number][]): string {
  writeGguf(path, new Map(entries.map(([k, type, value]) => [k, { type, value }])), []);
  return path;
}

describe('model catalog', () => {
  it('MODEL_PATH alone: one chat model, the default, never unloaded automatically', () => {
    const c = buildCatalog(AppConfig.fromEnv({ MODEL_NAME: 'tiny', PARALLEL_SLOTS: '3' }));
    expect(c.defaultId).toBe('tiny');
    expect(c.embeddingId).toBeUndefined();
    expect(c.specs).toHaveLength(1);
    expect(c.specs[0]).toMatchObject({ id: 'tiny', path: BUNDLED_MODEL, kind: 'chat', source: 'MODEL_PATH', slots: 3, keepAliveMs: -1, aliases: [] });
  });

  it('MODELS_DIR: every GGUF by name (split files by their first part), no bundled model unless MODEL_PATH is set', () => {
    const dir = dirWith('b-model.gguf', 'a-model.gguf', 'big-00001-of-00002.gguf', 'big-00002-of-00002.gguf', 'notes.txt.gguf.ipull');
    writeFileSync(join(dir, 'README.md'), 'not a model');
    expect(scanModelsDir(dir).map((p) => p.split('/').pop())).toEqual(['a-model.gguf', 'b-model.gguf', 'big-00001-of-00002.gguf']);
    const c = buildCatalog(AppConfig.fromEnv({ MODELS_DIR: dir, MODEL_KEEP_ALIVE: '90s' }));
    expect(c.specs.map((s) => [s.id, s.source, s.keepAliveMs])).toEqual([
      ['a-model', 'MODELS_DIR', -1],
      ['b-model', 'MODELS_DIR', 90_000],
      ['big', 'MODELS_DIR', 90_000],
    ]);
    expect(c.defaultId).toBe('a-model');
    const withPath = buildCatalog(AppConfig.fromEnv({ MODELS_DIR: dir, MODEL_PATH: BUNDLED_MODEL }));
    expect(withPath.specs.map((s) => s.id)).toEqual(['stories260K', 'a-model', 'b-model', 'big']);
    expect(withPath.defaultId).toBe('stories260K');
  });

  it('a models file (YAML): relative paths, aliases, kinds, per-model settings and sampling defaults over the server-wide ones', () => {
    const dir = dirWith('chat.gguf', 'embed.gguf');
    const file = modelsFile(
      dir,
      'models.yaml',
      [
        'default: small',
        'models:',
        '  - id: small',
        '    path: chat.gguf',
        '    aliases: [gpt-4o-mini, "org/small:q8"]',
        '    context_size: 1024',
        '    slots: 2',
        '    threads: 1',
        '    flash_attention: on',
        '    kv_cache_type: q8_0',
        '    keep_alive: 10m',
        '    defaults: { temperature: 0.2, top_p: 0.9, max_tokens: 64 }',
        '  - path: embed.gguf',
        '    kind: embedding',
        '    keep_alive: forever',
        '    preload: true',
      ].join('\n'),
    );
    const c = buildCatalog(AppConfig.fromEnv({ MODELS_FILE: file, PARALLEL_SLOTS: '4', KV_CACHE_TYPE_K: 'f16' }));
    expect(c.defaultId).toBe('small');
    expect(c.embeddingId).toBe('embed');
    expect(c.specs[0]).toMatchObject({
      id: 'small',
      path: join(dir, 'chat.gguf'),
      aliases: ['gpt-4o-mini', 'org/small:q8'],
      kind: 'chat',
      source: 'MODELS_FILE',
      contextSize: 1024,
      slots: 2,
      threads: 1,
      flashAttention: 'on',
      kvCacheTypeK: 'q8_0',
      kvCacheTypeV: 'q8_0',
      // The default model keeps the keep-alive its entry gives it.
      keepAliveMs: 600_000,
      defaults: { temperature: 0.2, top_p: 0.9, max_tokens: 64 },
    });
    expect(c.specs[1]).toMatchObject({ id: 'embed', kind: 'embedding', slots: 4, keepAliveMs: -1, preload: true, flashAttention: 'auto' });
  });

  it('reads the same file as JSON, and a restart with the same configuration gives the same registry', () => {
    const dir = dirWith('chat.gguf', 'other.gguf');
    const file = modelsFile(dir, 'models.json', JSON.stringify({ models: [{ id: 'c', path: 'chat.gguf', aliases: ['x'] }] }));
    const config = (): AppConfig => AppConfig.fromEnv({ MODELS_FILE: file, MODELS_DIR: dir });
    const first = buildCatalog(config());
    // chat.gguf is listed once (the file's entry), other.gguf from the folder.
    expect(first.specs.map((s) => [s.id, s.source])).toEqual([
      ['c', 'MODELS_FILE'],
      ['other', 'MODELS_DIR'],
    ]);
    expect(buildCatalog(config())).toEqual(first);
  });

  it('EMBEDDING_MODEL_PATH is the embedding model (listed once, of kind embedding)', () => {
    const dir = dirWith('embedder.gguf', 'chat.gguf');
    const c = buildCatalog(AppConfig.fromEnv({ MODELS_DIR: dir, EMBEDDING_MODEL_PATH: join(dir, 'embedder.gguf'), DEFAULT_MODEL: 'chat' }));
    expect(c.embeddingId).toBe('embedder');
    expect(c.specs.map((s) => [s.id, s.kind])).toEqual([
      ['embedder', 'embedding'],
      ['chat', 'chat'],
    ]);
    const alone = buildCatalog(AppConfig.fromEnv({ EMBEDDING_MODEL_PATH: join(dir, 'embedder.gguf') }));
    expect(alone.specs.map((s) => [s.id, s.kind, s.source])).toEqual([
      ['stories260K', 'chat', 'MODEL_PATH'],
      ['embedder', 'embedding', 'EMBEDDING_MODEL_PATH'],
    ]);
  });

  it('a folder file whose name another entry already uses is skipped with a warning', () => {
    const dir = dirWith('gpt-4o-mini.gguf', 'chat.gguf');
    const file = modelsFile(dir, 'm.yaml', 'models:\n  - id: c\n    path: chat.gguf\n    aliases: [gpt-4o-mini]\n');
    const c = buildCatalog(AppConfig.fromEnv({ MODELS_FILE: file, MODELS_DIR: dir }));
    expect(c.specs.map((s) => s.id)).toEqual(['c']);
    expect(c.warnings).toEqual([expect.stringContaining('gpt-4o-mini.gguf is skipped: "gpt-4o-mini" already names c')]);
  });

  it.each([
    ['models:\n  - path: a.gguf\n    kind: chatty\n', /kind must be one of chat, embedding, rerank/],
    ['models:\n  - path: a.gguf\n    slots: 0\n', /slots must be an integer between 1 and 256/],
    ['models:\n  - path: a.gguf\n    context: 100\n', /unknown field\(s\) context/],
    ['models:\n  - id: a\n', /needs a path/],
    ['models:\n  - path: a.gguf\n    flash_attention: off\n    kv_cache_type_v: q4_0\n', /needs flash_attention auto or on/],
    ['models:\n  - path: a.gguf\n    kv_cache_type: q5_1\n', /kv_cache_type must be one of f16, q8_0, q4_0/],
    ['models:\n  - path: a.gguf\n    keep_alive: soon\n', /keep_alive must be a duration/],
    ['models:\n  - path: a.gguf\n    defaults: { temperature: 3 }\n', /defaults.temperature must be a number between 0 and 2/],
    ['models:\n  - path: a.gguf\n    defaults: { seed: 3 }\n', /defaults.seed is not a sampling default/],
    ['models:\n  - id: x\n    path: a.gguf\n  - id: y\n    path: b.gguf\n    aliases: [x]\n', /"x" names two models \(x and y\)/],
    ['models:\n  - id: "bad id"\n    path: a.gguf\n', /id must be/],
    ['model:\n  - path: a.gguf\n', /expected a mapping with a "models" list/],
    ['models: [\n', /not valid YAML/],
  ])('refuses a bad models file, naming the problem: %j', (text, problem) => {
    const dir = dirWith('a.gguf', 'b.gguf');
    expect(() => buildCatalog(AppConfig.fromEnv({ MODELS_FILE: modelsFile(dir, 'models.yaml', text) }))).toThrow(problem);
  });

  it('refuses an unknown or non-chat default model, and a registry without a chat model', () => {
    const dir = dirWith('a.gguf');
    const file = modelsFile(dir, 'm.yaml', 'models:\n  - id: e\n    path: a.gguf\n    kind: embedding\n');
    expect(() => buildCatalog(AppConfig.fromEnv({ MODELS_DIR: dir, DEFAULT_MODEL: 'nope' }))).toThrow(/DEFAULT_MODEL "nope" names no configured model \(a\)/);
    expect(() => buildCatalog(AppConfig.fromEnv({ MODELS_FILE: file, DEFAULT_MODEL: 'e' }))).toThrow(/is a embedding model; the default must be a chat model/);
    expect(() => buildCatalog(AppConfig.fromEnv({ MODELS_FILE: file }))).toThrow(ModelCatalogError);
    expect(() => buildCatalog(AppConfig.fromEnv({ MODELS_FILE: join(dir, 'missing.yaml') }))).toThrow(/does not exist/);
  });

  it('tells chat, embedding and ranking models apart by their GGUF metadata', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kinds-'));
    expect(detectKind(BUNDLED_MODEL)).toBe('chat');
    expect(detectKind(metadataOnly(join(dir, 'bert.gguf'), [['general.architecture', GgufType.STRING, 'bert']]))).toBe('embedding');
    expect(
      detectKind(metadataOnly(join(dir, 'qwen3-embed.gguf'), [['general.architecture', GgufType.STRING, 'qwen3'], ['qwen3.pooling_type', GgufType.UINT32, 3]])),
    ).toBe('embedding');
    expect(
      detectKind(metadataOnly(join(dir, 'reranker.gguf'), [['general.architecture', GgufType.STRING, 'bert'], ['bert.pooling_type', GgufType.UINT32, 4]])),
    ).toBe('rerank');
    writeFileSync(join(dir, 'garbage.gguf'), 'not a gguf');
    // Unreadable: listed as chat, and its load reports the problem.
    expect(detectKind(join(dir, 'garbage.gguf'))).toBe('chat');
  });

  it('names a model after its file', () => {
    expect(idFromFileName('/m/Qwen2.5-0.5B-Instruct-Q4_K_M.gguf')).toBe('Qwen2.5-0.5B-Instruct-Q4_K_M');
    expect(idFromFileName('/m/big-00001-of-00003.gguf')).toBe('big');
  });
});
