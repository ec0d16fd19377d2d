import { Body, Controller, Delete, Get, HttpCode, Param, Post } from '@nestjs/common';
import { ApiSecurity, ApiTags } from '@nestjs/swagger';
import { Caller, Principal, RequireScopes } from '@app/auth';
import { ClientSignal } from '@app/common';
import { RerankerService } from '@app/inference';
import { RetrievalService, toSource } from '@app/retrieval';
import { accessorOf } from './collection.access';
import { searchReranked } from './context.assembly';
import { DocumentUploadsService } from './document-uploads.service';
import { AddDocumentDto, CreateCollectionDto, QueryDto } from './retrieval.dto';

/**
 * Collections and documents: reads need `generate`, writes need `retrieval`. A collection belongs
 * to the key that created it: other keys see it only when it was created `shared` (read-only to
 * them); admin keys see and change every collection.
 */
@ApiTags('retrieval')
@ApiSecurity('api-key')
@Controller('v1/collections')
export class CollectionsController {
  constructor(
    private readonly retrieval: RetrievalService,
    private readonly reranker: RerankerService,
    private readonly uploads: DocumentUploadsService,
  ) {}

  @Get()
  async list(@Caller() caller: Principal | undefined): Promise<object> {
    return { object: 'list', data: await this.retrieval.listCollections(accessorOf(caller)) };
  }

  @Post()
  @RequireScopes('retrieval')
  create(@Body() dto: CreateCollectionDto, @Caller() caller: Principal | undefined): Promise<object> {
    return this.retrieval.createCollection(dto.name, accessorOf(caller), { shared: dto.shared });
  }

  @Get(':name')
  get(@Param('name') name: string, @Caller() caller: Principal | undefined): Promise<object> {
    return this.retrieval.getCollection(name, accessorOf(caller));
  }

  @Delete(':name')
  @RequireScopes('retrieval')
  async delete(@Param('name') name: string, @Caller() caller: Principal | undefined): Promise<object> {
    await this.retrieval.deleteCollection(name, accessorOf(caller));
    return { name, deleted: true };
  }

  @Post(':name/documents')
  @RequireScopes('retrieval')
  add(
    @Param('name') name: string,
    @Body() dto: AddDocumentDto,
    @Caller() caller: Principal | undefined,
    @ClientSignal() signal: AbortSignal,
  ): Promise<object> {
    return this.uploads.add(name, dto, caller, signal);
  }

  @Delete(':name/documents/:id')
  @RequireScopes('retrieval')
  async deleteDocument(@Param('name') name: string, @Param('id') id: string, @Caller() caller: Principal | undefined): Promise<object> {
    return { document_id: id, deleted_chunks: await this.retrieval.deleteDocument(name, id, accessorOf(caller)) };
  }

  @Post(':name/query')
  @HttpCode(200)
  async query(@Param('name') name: string, @Body() dto: QueryDto, @Caller() caller: Principal | undefined): Promise<object> {
    const who = accessorOf(caller);
    const q = { query: dto.query, topK: dto.top_k, minScore: dto.min_score, filter: dto.filter };
    const ranked = dto.rerank
      ? await searchReranked(this.retrieval, this.reranker, name, q, 'rerank', who)
      : (await this.retrieval.query(name, q, who)).map((hit) => ({ hit, score: undefined }));
    return {
      object: 'list',
      data: ranked.map(({ hit, score }) => ({ ...toSource(hit), ...(score === undefined ? {} : { relevance_score: score }), text: hit.text, metadata: hit.metadata })),
    };
  }
}
