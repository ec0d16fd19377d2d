import { Body, Controller, Delete, Get, HttpCode, Param, Post } from '@nestjs/common';
import { ApiSecurity, ApiTags } from '@nestjs/swagger';
import { RequireScopes } from '@app/auth';
import { RetrievalService, toSource } from '@app/retrieval';
import { AddDocumentDto, CreateCollectionDto, QueryDto } from './retrieval.dto';

/** Collections and documents: reads need `generate`, writes need `retrieval`. */
@ApiTags('retrieval')
@ApiSecurity('api-key')
@Controller('v1/collections')
export class CollectionsController {
  constructor(private readonly retrieval: RetrievalService) {}

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
    const hits = await this.retrieval.query(name, { query: dto.query, topK: dto.top_k, minScore: dto.min_score, filter: dto.filter });
    return { object: 'list', data: hits.map((h) => ({ ...toSource(h), text: h.text, metadata: h.metadata })) };
  }
}
