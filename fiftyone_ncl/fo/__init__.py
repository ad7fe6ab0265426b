"""The FiftyOne side: reading pairs and embeddings from a collection,
writing fields transactionally, recording runs like brain runs."""
from fiftyone_ncl.fo.database import check_database as _check_database

_check_database()  # before anything here connects: one database, always
