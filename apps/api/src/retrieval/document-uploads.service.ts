import { Injectable } from '@nestjs/common';
import { Principal, RateLimitService } from '@app/auth';
import { AppConfig } from '@app/common';
import { AddedDocument, NewDocument, RetrievalService } from '@app/retrieval';
import { UsageMeterService } from '../usage/usage-meter.service';
import { accessorOf } from './collection.access';

/**
 * Document uploads as a key's work: at most RETRIEVAL_UPLOAD_CONCURRENCY in progress per key (the
 * chunking and embedding of a large document keeps a core busy for minutes), the chunks' tokens
 * reserved against the key's tokens-per-window limit before any is embedded and settled to what
 * was embedded, and the work stopped when the client goes away.
 */
@Injectable()
export class DocumentUploadsService {
  constructor(
    private readonly retrieval: RetrievalService,
    private readonly limits: RateLimitService,
    private readonly usage: UsageMeterService,
    private readonly config: AppConfig,
  ) {}

  async add(name: string, doc: NewDocument, caller: Principal | undefined, signal: AbortSignal): Promise<AddedDocument> {
    const limit = this.config.retrievalUploadConcurrency;
    const slot = caller
      ? await this.limits.acquireSlot(
          caller,
          'upload',
          limit,
          `Too many document uploads in progress for this API key (RETRIEVAL_UPLOAD_CONCURRENCY ${limit}); retry when one finishes`,
        )
      : null;
    try {
      return await this.retrieval.addDocument(name, doc, accessorOf(caller), {
        reserveTokens: (tokens) => this.usage.reserve(caller, tokens),
        signal,
      });
    } finally {
      slot?.release();
    }
  }
}
