/*
 * A Mosquitto 2.0 plugin: every message a client publishes carries its authenticated identity
 * (the MQTT username; with use_identity_as_username, its certificate's CN) as the MQTT 5 user
 * property "iot-identity", so the platform's ingestion can refuse a reading whose topic names
 * another device, whatever the ACL let through. A client that sends that property itself is
 * refused: only the broker may say who published. Anonymous clients get no property.
 *
 * Built by tools/services.sh (gcc, mosquitto-dev); loaded with `plugin <path>.so`.
 */
#include <stdlib.h>
#include <string.h>
#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#include <mqtt_protocol.h>

#define NAME "iot-identity"
static mosquitto_plugin_id_t *plugin_id;

static int on_message(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_message *ed = event_data;
	const char *username = mosquitto_client_username(ed->client);
	const mosquitto_property *p;
	(void)event; (void)userdata;
	for (p = ed->properties; p; p = mosquitto_property_next(p)) {
		char *name = NULL, *value = NULL;
		int forged;
		if (mosquitto_property_identifier(p) != MQTT_PROP_USER_PROPERTY) continue;
		mosquitto_property_read_string_pair(p, MQTT_PROP_USER_PROPERTY, &name, &value, false);
		forged = name && strcmp(name, NAME) == 0;
		mosquitto_free(name);
		mosquitto_free(value);
		if (forged) return MOSQ_ERR_ACL_DENIED;
	}
	if (!username) return MOSQ_ERR_SUCCESS;
	return mosquitto_property_add_string_pair(&ed->properties, MQTT_PROP_USER_PROPERTY, NAME, username);
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	(void)supported_version_count; (void)supported_versions;
	return 5;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **user_data, struct mosquitto_opt *opts, int opt_count)
{
	(void)user_data; (void)opts; (void)opt_count;
	plugin_id = identifier;
	return mosquitto_callback_register(plugin_id, MOSQ_EVT_MESSAGE, on_message, NULL, NULL);
}

int mosquitto_plugin_cleanup(void *user_data, struct mosquitto_opt *opts, int opt_count)
{
	(void)user_data; (void)opts; (void)opt_count;
	return mosquitto_callback_unregister(plugin_id, MOSQ_EVT_MESSAGE, on_message, NULL);
}
