"""SQL persistence shared by the event store and the read models: engines, schema, migrations."""
