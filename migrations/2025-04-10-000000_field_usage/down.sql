DROP TABLE IF EXISTS auto_indexed_fields;
DROP TABLE IF EXISTS field_usage;
