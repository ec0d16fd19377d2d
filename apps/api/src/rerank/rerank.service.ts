import { Injectable } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { Principal } from '@app/auth';
import { InputGuardService } from '@app/common';
import { RerankerService } from '@app/inference';
import { UsageMeterService } from '../usage/usage-meter.service';
import { RerankRequestDto } from './rerank.dto';

/**
 * Reranking: each document scored against the query by the reranker (RERANK_MODEL_PATH), results
 * best first. Charged in tokens (every query + document pair as evaluated) to the key's
 * tokens-per-window limit, budgets and the usage ledger.
 */
@Injectable()
export class RerankService {
  constructor(
    private readonly reranker: RerankerService,
    private readonly usage: UsageMeterService,
    private readonly guard: InputGuardService,
  ) {}

  async rerank(dto: RerankRequestDto, caller: Principal | undefined, signal: AbortSignal): Promise<object> {
    this.reranker.assertModel(dto.model);
    const documents = dto.documents.map((d) => (typeof d === 'string' ? d : d.text));
    this.guard.check([{ field: 'query', text: dto.query }, ...documents.map((text, i) => ({ field: `documents[${i}]`, text }))]);
    const tokens = (await this.reranker.measure(dto.query, documents)).reduce((a, b) => a + b, 0);
    const scores = await this.usage.chargeTokens(caller, tokens, () => this.reranker.rank(dto.query, documents, signal), this.reranker.id);
    const results = scores
      .map((relevance_score, index) => ({ index, relevance_score, ...(dto.return_documents ? { document: { text: documents[index] } } : {}) }))
      .sort((a, b) => b.relevance_score - a.relevance_score || a.index - b.index)
      .slice(0, dto.top_n ?? documents.length);
    return { id: `rerank-${randomUUID()}`, object: 'list', model: this.reranker.id, results, usage: { prompt_tokens: tokens, total_tokens: tokens } };
  }
}
