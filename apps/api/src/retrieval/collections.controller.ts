import { Body, Controller, Delete, Get, HttpCode, Param, Post } from '@nestjs/common';
import { ApiSecurity, ApiTags } from '@nestjs/swagger';
import { RequireScopes } from '@app/auth';
import { RerankerService } from '@app/inference';
import { RetrievalService, toSource } from '@app/retrieval';
import { searchReranked } from './context.assembly';
import { AddDocumentDto, CreateCollectionDto, QueryDto } from './retrieval.dto';

/** Collections and documents: reads need `generate`, writes need `retrieval`. */
@ApiTags('retrieval')
@ApiSecurity('api-key')
@Controller('v1/collections')
export class CollectionsController {
  constructor(
    private readonly retrieval: RetrievalService,
    private readonly reranker: RerankerService,
  ) {}

  @Get()
  async list(): Promise<object> {
    return { object: 'list', data: await this.retrieval.listCollections() };
  }

  @Post()
  @RequireScopes('retrieval')
  create(@Body() dto: CreateCollectionDto): Promise<object> {
    return this.retrieval.createCollection(dto.name);
  }

  @Get(':name')
  get(@Param('name') name: string): Promise<object> {
    return this.retrieval.getCollection(name);
  }

  @Delete(':name')
  @RequireScopes('retrieval')
  async delete(@Param('name') name: string): Promise<object> {
    await this.retrieval.deleteCollection(name);
    return { name, deleted: true };
  }

  @Post(':name/documents')
  @RequireScopes('retrieval')
  add(@Param('name') name: string, @Body() dto: AddDocumentDto): Promise<object> {
    return this.retrieval.addDocument(name, dto);
  }

  @Delete(':name/documents/:id')
  @RequireScopes('retrieval')
  async deleteDocument(@Param('name') name: string, @Param('id') id: string): Promise<object> {
    return { document_id: id, deleted_chunks: await this.retrieval.deleteDocument(name, id) };
  }

  @Post(':name/query')
  @HttpCode(200)
  async query(@Param('name') name: string, @Body() dto: QueryDto): Promise<object> {
    const q = { query: dto.query, topK: dto.top_k, minScore: dto.min_score, filter: dto.filter };
    const ranked = dto.rerank
      ? await searchReranked(this.retrieval, this.reranker, name, q, 'rerank')
      : (await this.retrieval.query(name, q)).map((hit) => ({ hit, score: undefined }));
    return {
      object: 'list',
      data: ranked.map(({ hit, score }) => ({ ...toSource(hit), ...(score === undefined ? {} : { relevance_score: score }), text: hit.text, metadata: hit.metadata })),
    };
  }
}
