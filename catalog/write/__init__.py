"""The write side: every change to the catalog, validated in Song's order and committed.

    registry      analysis types: named, versioned JSON Schemas rendered onto the base schema
    validation    a payload checked in Song's order, and the rows it turns into (the Planner)
    commit        the Committer: the write lock, the latest committed state, one commit protocol
    registration  submit and submit_batch: group commit, children first, analyses last
    lifecycle     publish / unpublish / suppress, and Song's publish-time storage check
    updates       PUT / PATCH of dynamic data, file updates and deletes (append-only)
    studies       study creation

Writes read the read model (``read/``) and the object store (``store/``); nothing below imports
this package.
"""
