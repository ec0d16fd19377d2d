import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type * as NodeLlamaCpp from 'node-llama-cpp';
import { BUNDLED_MODEL } from '@app/common';
import { readGgufMetadata, synthesizeReranker } from '@app/inference';

/**
 * What the constructed weights compute, written out: over the document's positions (the first
 * EOS, the document's tokens, the last EOS), the share of each token's occurrences so far that
 * lie in the query (BOS + query), averaged; score = σ(10·(mean − 0.1)).
 */
function overlapScore(query: readonly number[], document: readonly number[]): number {
  const seq = [1, ...query, 2, ...document, 2];
  const split = query.length + 1;
  let sum = 0;
  for (let i = split; i < seq.length; i++) {
    const inQuery = seq.slice(0, split).filter((x) => x === seq[i]).length;
    const inDocument = seq.slice(split, i + 1).filter((x) => x === seq[i]).length;
    sum += inQuery / (inQuery + inDocument);
  }
  return 1 / (1 + Math.exp(-10 * (sum / (seq.length - split) - 0.1)));
}

describe('synthetic reranking GGUF', () => {
  let llama: NodeLlamaCpp.Llama;
  const dir = mkdtempSync(join(tmpdir(), 'llm-rerank-synth-'));
  beforeAll(async () => {
    const { getLlama } = await import('node-llama-cpp');
    llama = await getLlama({ gpu: false, build: 'never' });
  });
  afterAll(() => llama?.dispose());

  it('carries what llama.cpp\'s reranker support reads: qwen3, pooling type RANK, classifier labels, cls.output', () => {
    const path = join(dir, 'meta.gguf');
    synthesizeReranker(path, BUNDLED_MODEL, 'overlap');
    const meta = readGgufMetadata(path);
    expect(meta.get('general.architecture')).toBe('qwen3');
    expect(meta.get('qwen3.pooling_type')).toBe(4);
    expect((meta.get('qwen3.classifier.output_labels') as { items: readonly unknown[] }).items).toEqual(['yes', 'no']);
  });

  it('overlap weights: llama.cpp\'s ranking scores equal the documented token-overlap formula (within 0.01)', async () => {
    const path = join(dir, 'overlap.gguf');
    synthesizeReranker(path, BUNDLED_MODEL, 'overlap');
    const model = await llama.loadModel({ modelPath: path });
    const context = await model.createRankingContext({ contextSize: 512, batchSize: 512, threads: 1 });
    const query = 'Where does the cat sleep?';
    const documents = ['The cat sleeps on the warm bed.', 'Stocks fell sharply on Monday.', 'Where does the cat sleep? On the bed.', 'cat cat cat cat', 'Bananas are yellow.'];
    // node-llama-cpp's ranking context tokenizes each text this way.
    const tokens = (text: string): number[] => model.tokenize(text, false, 'trimLeadingSpace') as number[];
    for (const document of documents) {
      const score = await context.rank(query, document);
      expect({ document, score }).toEqual({ document, score: expect.closeTo(overlapScore(tokens(query), tokens(document)), 2) });
    }
    await context.dispose();
    await model.dispose();
  });
});
