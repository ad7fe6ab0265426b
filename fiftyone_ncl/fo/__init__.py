"""The FiftyOne side: reading pairs and embeddings from a collection,
writing fields transactionally, recording runs like brain runs."""
from fiftyone_ncl.fo.database import check_database as _check_database
from fiftyone_ncl.fo.database import serialize_database_start as _serialize_database_start

_check_database()  # before anything here connects: one database, always
_serialize_database_start()  # processes started together attach to one mongod
