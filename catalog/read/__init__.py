"""The read side: Song's documents served from in-process indexes kept in step with Delta.

records     the rows the model holds: named entity rows, AnalysisRecord
indexes     the containers (dicts, sorted lists) and the Arrow columns of regex id search
bulkload    filling the indexes from whole Arrow tables when a catalog opens
readmodel   ReadModel: load, refresh from other writers' commits, apply rows, documents, pages
search      portal search: columnar filters, sorting and paging over analyses and files
entities    donors, specimens, samples and files by id, the study tree, Score's legacy entities
export      resubmittable payloads and score-client manifests
"""
