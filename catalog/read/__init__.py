"""The read side: Song's documents served from the catalog's current state, kept in step with Delta.

records     the rows the model serves: named entity rows, AnalysisRecord
index       the state on disk: one SQLite file per machine, its schema, the set-wise apply rules
readmodel   ReadModel: open (or build) the file, catch up with commits, documents, pages, counts
search      portal search: columnar filters, sorting and paging over analyses and files
entities    donors, specimens, samples and files by id, the study tree, Score's legacy entities
export      resubmittable payloads and score-client manifests
"""
