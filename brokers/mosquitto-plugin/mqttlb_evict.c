/*
 * mqttlb eviction plugin for Mosquitto 2.0 (plugin API v5).
 *
 * - MOSQ_EVT_MESSAGE: per-client inbound PUBLISH count and payload bytes, turned once a second into
 *   an exponentially weighted rate (messages/s, bytes/s; time constant load_window_seconds).
 * - MOSQ_EVT_DISCONNECT: the client's entry is dropped.
 * - MOSQ_EVT_CONTROL on $CONTROL/mqttlb/v1: JSON commands `listClients` and `evict` from the one
 *   authorised client; every command gets an answer on $CONTROL/mqttlb/v1/response, sent to the
 *   requesting client only.
 * - MOSQ_EVT_TICK: an accepted eviction batch is carried out at <= maxPerSecond, client i of the batch
 *   being disconnected no earlier than i / maxPerSecond seconds after the batch was accepted.
 *
 * Bad input (malformed JSON, unknown command, unauthorised client, unknown or refused client ids,
 * counts above the bounds, a batch already running) gets an error answer and changes nothing.
 * Protocol and options: brokers/mosquitto-plugin/README.md.  Build: the Makefile beside this file.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#include <mqtt_protocol.h>

#define CONTROL_TOPIC "$CONTROL/mqttlb/v1"
#define RESPONSE_TOPIC "$CONTROL/mqttlb/v1/response"
#define MAX_COMMANDS 8          /* commands per control message */
#define ROLL_SECONDS 1.0        /* how often window counts become rates */
#define MAX_REFERENCE 255       /* longest serverReference accepted */

/* Not in the public plugin API of 2.0: the broker's own DISCONNECT sender (mosquitto's lib/send_mosq.h),
 * exported by the mosquitto binary.  Used only to give MQTT 5 clients the requested reason code before
 * the public kick; when the broker does not export it, they get the kick's 0x98 Administrative action. */
extern int send__disconnect(struct mosquitto *mosq, uint8_t reason_code, const mosquitto_property *properties)
	__attribute__((weak));

struct client_load {
	struct client_load *next;       /* hash chain */
	struct mosquitto *client;       /* the connection this entry counts; dropped at its DISCONNECT */
	char *id;
	int protocol;                   /* 3, 4 or 5 */
	bool clean;                     /* clean session (MQTT 3) / clean start (MQTT 5) */
	bool rated;                     /* false until the first window closed */
	double first_seen, window_start;
	uint64_t window_msgs, window_bytes;
	double msgs_rate, bytes_rate;
};

struct batch {
	char **ids;
	bool *kicked;
	size_t n, next;
	size_t mqtt5, mqtt3;            /* clients kicked so far, by protocol (MQTT 3.x has no reason code) */
	double start, rate;
	int reason_code;
	char *reference, *requester, *correlation;
};

static struct {
	char *control_client_id, *control_username;
	double max_per_second, load_window;
	long max_clients;
	bool mqtt5_clean_start_transient;
} cfg = {NULL, NULL, 100.0, 10.0, 1000, false};

static struct {
	uint64_t commands, errors, unauthorised, evicted, refused, unknown;
} counters;

static mosquitto_plugin_id_t *plugin_id;
static struct client_load **buckets;
static size_t nbuckets, nclients;
static struct batch *batch;
static double last_roll;

static double now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---------------------------------------------------------------- client table (chained hash on id) */
static size_t bucket_of(const char *id, size_t count)
{
	uint64_t h = 1469598103934665603ULL;
	for(; *id; id++){
		h = (h ^ (unsigned char)*id) * 1099511628211ULL;
	}
	return (size_t)(h & (count - 1));
}

static struct client_load **slot_of(const char *id)
{
	struct client_load **slot = &buckets[bucket_of(id, nbuckets)];
	while(*slot && strcmp((*slot)->id, id)){
		slot = &(*slot)->next;
	}
	return slot;
}

static struct client_load *find_client(const char *id)
{
	return nbuckets ? *slot_of(id) : NULL;
}

static int grow_table(void)
{
	size_t count = nbuckets ? nbuckets * 2 : 1024;
	struct client_load **grown = calloc(count, sizeof(*grown));
	if(!grown) return MOSQ_ERR_NOMEM;
	for(size_t i = 0; i < nbuckets; i++){
		struct client_load *c = buckets[i], *next;
		for(; c; c = next){
			next = c->next;
			size_t b = bucket_of(c->id, count);
			c->next = grown[b];
			grown[b] = c;
		}
	}
	free(buckets);
	buckets = grown;
	nbuckets = count;
	return MOSQ_ERR_SUCCESS;
}

static void drop_client(const char *id)
{
	struct client_load **slot = slot_of(id), *c = *slot;
	*slot = c->next;
	free(c->id);
	free(c);
	nclients--;
}

/* The entry for this connection: a new one, or `c` reset when another connection took over the id. */
static struct client_load *track(struct mosquitto *client, const char *id, struct client_load *c)
{
	double now = now_seconds();
	if(!c){
		if(nclients >= nbuckets && grow_table()) return NULL;
		c = calloc(1, sizeof(*c));
		if(!c || !(c->id = strdup(id))){
			free(c);
			return NULL;
		}
		struct client_load **slot = slot_of(id);
		*slot = c;
		nclients++;
	}
	c->client = client;
	c->protocol = mosquitto_client_protocol_version(client);
	c->clean = mosquitto_client_clean_session(client);
	c->rated = false;
	c->first_seen = c->window_start = now;
	c->window_msgs = c->window_bytes = 0;
	c->msgs_rate = c->bytes_rate = 0.0;
	return c;
}

static bool is_persistent(const struct client_load *c)
{
	/* MQTT 3: clean session 0.  MQTT 5: the 2.0 plugin API shows Clean Start but not the session expiry
	 * interval, so a clean-start client counts as persistent unless the operator declares it transient. */
	if(c->protocol == 5) return !c->clean || !cfg.mqtt5_clean_start_transient;
	return !c->clean;
}

/* Windows at least half a roll long become rate samples; a new client's first sample seeds its rate. */
static void roll_rates(double now)
{
	for(size_t i = 0; i < nbuckets; i++){
		for(struct client_load *c = buckets[i]; c; c = c->next){
			double dt = now - c->window_start;
			if(dt < ROLL_SECONDS / 2) continue;
			double msgs = (double)c->window_msgs / dt, bytes = (double)c->window_bytes / dt;
			double alpha = c->rated ? 1.0 - exp(-dt / cfg.load_window) : 1.0;
			c->msgs_rate += alpha * (msgs - c->msgs_rate);
			c->bytes_rate += alpha * (bytes - c->bytes_rate);
			c->rated = true;
			c->window_start = now;
			c->window_msgs = c->window_bytes = 0;
		}
	}
}

/* ---------------------------------------------------------------- answers */
static void publish_answer(const char *clientid, cJSON *responses)
{
	cJSON *tree = cJSON_CreateObject();
	if(!tree){
		cJSON_Delete(responses);
		return;
	}
	cJSON_AddItemToObject(tree, "responses", responses);
	char *payload = cJSON_PrintUnformatted(tree);
	cJSON_Delete(tree);
	if(!payload) return;
	mosquitto_broker_publish_copy(clientid, RESPONSE_TOPIC, (int)strlen(payload), payload, 1, false, NULL);
	cJSON_free(payload);
}

static cJSON *new_response(cJSON *responses, const char *command, const char *correlation)
{
	cJSON *r = cJSON_CreateObject();
	if(!r) return NULL;
	cJSON_AddStringToObject(r, "command", command ? command : "");
	if(correlation) cJSON_AddStringToObject(r, "correlationData", correlation);
	cJSON_AddItemToArray(responses, r);
	return r;
}

static cJSON *error_response(cJSON *responses, const char *command, const char *correlation, const char *error)
{
	cJSON *r = new_response(responses, command, correlation);
	counters.errors++;
	if(r) cJSON_AddStringToObject(r, "error", error);
	return r;
}

static void add_strings(cJSON *obj, const char *name, char **ids, const bool *mask, bool want, size_t n)
{
	cJSON *array = cJSON_AddArrayToObject(obj, name);
	for(size_t i = 0; array && i < n; i++){
		if(!mask || mask[i] == want) cJSON_AddItemToArray(array, cJSON_CreateString(ids[i]));
	}
}

/* ---------------------------------------------------------------- listClients */
static void list_clients(cJSON *responses, const char *correlation)
{
	cJSON *r = new_response(responses, "listClients", correlation);
	cJSON *clients = r ? cJSON_AddArrayToObject(r, "clients") : NULL;
	if(!clients) return;
	double now = now_seconds();
	for(size_t i = 0; i < nbuckets; i++){
		for(struct client_load *c = buckets[i]; c; c = c->next){
			cJSON *item = cJSON_CreateObject();
			if(!item) return;
			cJSON_AddStringToObject(item, "clientId", c->id);
			cJSON_AddNumberToObject(item, "messagesInPerSecond", c->msgs_rate);
			cJSON_AddNumberToObject(item, "bytesInPerSecond", c->bytes_rate);
			cJSON_AddBoolToObject(item, "persistent", is_persistent(c));
			cJSON_AddNumberToObject(item, "protocol", c->protocol);
			cJSON_AddNumberToObject(item, "connectedSeconds", now - c->first_seen);
			cJSON_AddItemToArray(clients, item);
		}
	}
	cJSON *k = cJSON_AddObjectToObject(r, "counters");
	if(k){
		cJSON_AddNumberToObject(k, "commandsTotal", (double)counters.commands);
		cJSON_AddNumberToObject(k, "errorsTotal", (double)counters.errors);
		cJSON_AddNumberToObject(k, "unauthorisedTotal", (double)counters.unauthorised);
		cJSON_AddNumberToObject(k, "evictedTotal", (double)counters.evicted);
		cJSON_AddNumberToObject(k, "refusedTotal", (double)counters.refused);
		cJSON_AddNumberToObject(k, "unknownTotal", (double)counters.unknown);
		cJSON_AddNumberToObject(k, "evictionsPending", batch ? (double)(batch->n - batch->next) : 0.0);
	}
	cJSON *limits = cJSON_AddObjectToObject(r, "limits");
	if(limits){
		cJSON_AddNumberToObject(limits, "maxPerSecond", cfg.max_per_second);
		cJSON_AddNumberToObject(limits, "maxClients", (double)cfg.max_clients);
		cJSON_AddNumberToObject(limits, "loadWindowSeconds", cfg.load_window);
	}
}

/* ---------------------------------------------------------------- evict */
static void free_batch(struct batch *b)
{
	if(!b) return;
	for(size_t i = 0; b->ids && i < b->n; i++) free(b->ids[i]);
	free(b->ids);
	free(b->kicked);
	free(b->reference);
	free(b->requester);
	free(b->correlation);
	free(b);
}

static int compare_strings(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The "clients" array as a new list of n strings (sorted copy checked for duplicates), or an error text. */
static const char *client_list(const cJSON *clients, char ***out, size_t *n)
{
	static char message[96];
	if(!cJSON_IsArray(clients)) return "clients must be an array of client ids";
	int size = cJSON_GetArraySize(clients);
	if(size < 1) return "clients must not be empty";
	if(size > cfg.max_clients){
		snprintf(message, sizeof(message), "%d clients is above the bound of %ld per command", size, cfg.max_clients);
		return message;
	}
	char **ids = calloc((size_t)size, sizeof(*ids)), **sorted = calloc((size_t)size, sizeof(*ids));
	const char *error = (!ids || !sorted) ? "out of memory" : NULL;
	int i = 0;
	for(const cJSON *item = clients->child; item && !error; item = item->next, i++){
		if(!cJSON_IsString(item) || !item->valuestring[0]) error = "every client id must be a non-empty string";
		else if(!(ids[i] = strdup(item->valuestring))) error = "out of memory";
		else sorted[i] = ids[i];
	}
	if(!error){
		qsort(sorted, (size_t)size, sizeof(*sorted), compare_strings);
		for(i = 1; i < size && !error; i++){
			if(!strcmp(sorted[i - 1], sorted[i])) error = "clients holds a client id twice";
		}
	}
	free(sorted);
	if(error){
		for(i = 0; ids && i < size; i++) free(ids[i]);
		free(ids);
		return error;
	}
	*out = ids;
	*n = (size_t)size;
	return NULL;
}

/* Options of an evict command into `b` (rate, reason code, server reference), or an error text. */
static const char *evict_options(const cJSON *cmd, struct batch *b, bool *allow_persistent)
{
	static char message[96];
	const cJSON *rate = cJSON_GetObjectItemCaseSensitive(cmd, "maxPerSecond");
	const cJSON *code = cJSON_GetObjectItemCaseSensitive(cmd, "reasonCode");
	const cJSON *ref = cJSON_GetObjectItemCaseSensitive(cmd, "serverReference");
	const cJSON *allow = cJSON_GetObjectItemCaseSensitive(cmd, "allowPersistent");
	if(!cJSON_IsNumber(rate) || !(rate->valuedouble > 0)) return "maxPerSecond must be a number above 0";
	if(rate->valuedouble > cfg.max_per_second){
		snprintf(message, sizeof(message), "maxPerSecond %g is above the bound of %g", rate->valuedouble,
				cfg.max_per_second);
		return message;
	}
	b->rate = rate->valuedouble;
	b->reason_code = MQTT_RC_USE_ANOTHER_SERVER;
	if(code){
		if(!cJSON_IsNumber(code) || (code->valuedouble != MQTT_RC_ADMINISTRATIVE_ACTION
				&& code->valuedouble != MQTT_RC_USE_ANOTHER_SERVER && code->valuedouble != MQTT_RC_SERVER_MOVED)){
			return "reasonCode must be 152 (0x98), 156 (0x9C) or 157 (0x9D)";
		}
		b->reason_code = code->valueint;
	}
	if(ref){
		if(!cJSON_IsString(ref) || !ref->valuestring[0] || strlen(ref->valuestring) > MAX_REFERENCE){
			return "serverReference must be a string of 1 to 255 characters";
		}
		if(!(b->reference = strdup(ref->valuestring))) return "out of memory";
	}
	if(allow && !cJSON_IsBool(allow)) return "allowPersistent must be true or false";
	*allow_persistent = cJSON_IsTrue(allow);
	return NULL;
}

/* Unknown (not tracked here) and refused (persistent without opt-in, or the control client) ids:
 * when there is any, the answer names them all and the batch is not started. */
static bool check_clients(cJSON *responses, const char *correlation, struct batch *b, bool allow_persistent)
{
	bool *unknown = calloc(b->n, sizeof(bool)), *refused = calloc(b->n, sizeof(bool));
	size_t n_unknown = 0, n_refused = 0;
	for(size_t i = 0; unknown && refused && i < b->n; i++){
		struct client_load *c = find_client(b->ids[i]);
		if(!c){
			unknown[i] = true;
			n_unknown++;
		}else if(!strcmp(b->ids[i], cfg.control_client_id) || (is_persistent(c) && !allow_persistent)){
			refused[i] = true;
			n_refused++;
		}
	}
	bool ok = unknown && refused && !n_unknown && !n_refused;
	if(!unknown || !refused){
		error_response(responses, "evict", correlation, "out of memory");
	}else if(!ok){
		char message[128];
		snprintf(message, sizeof(message), "%zu unknown and %zu refused client ids (persistent session, or the "
				"control client); nothing done", n_unknown, n_refused);
		cJSON *r = error_response(responses, "evict", correlation, message);
		if(r){
			add_strings(r, "evicted", b->ids, NULL, false, 0);
			add_strings(r, "unknown", b->ids, unknown, true, b->n);
			add_strings(r, "refused", b->ids, refused, true, b->n);
		}
		counters.unknown += n_unknown;
		counters.refused += n_refused;
	}
	free(unknown);
	free(refused);
	return ok;
}

static void evict(cJSON *responses, const cJSON *cmd, const char *correlation, const char *requester)
{
	char busy[96];
	if(batch){
		snprintf(busy, sizeof(busy), "busy: a batch is in progress (%zu of %zu done); nothing done",
				batch->next, batch->n);
		error_response(responses, "evict", correlation, busy);
		return;
	}
	struct batch *b = calloc(1, sizeof(*b));
	bool allow_persistent = false;
	const char *error = b ? evict_options(cmd, b, &allow_persistent) : "out of memory";
	if(!error) error = client_list(cJSON_GetObjectItemCaseSensitive(cmd, "clients"), &b->ids, &b->n);
	if(!error && (!(b->kicked = calloc(b->n, sizeof(bool))) || !(b->requester = strdup(requester))
			|| (correlation && !(b->correlation = strdup(correlation))))){
		error = "out of memory";
	}
	if(error){
		error_response(responses, "evict", correlation, error);
		free_batch(b);
		return;
	}
	if(!check_clients(responses, correlation, b, allow_persistent)){
		free_batch(b);
		return;
	}
	b->start = now_seconds();
	batch = b;
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "mqttlb: evicting %zu clients at <= %g/s", b->n, b->rate);
}

static void disconnect_one(struct batch *b, size_t i)
{
	struct client_load *c = find_client(b->ids[i]);
	if(!c) return;  /* left by itself since the batch was accepted: answered as unknown */
	bool mqtt5 = c->protocol == 5;
	if(mqtt5 && send__disconnect){
		mosquitto_property *props = NULL;
		if(b->reference) mosquitto_property_add_string(&props, MQTT_PROP_SERVER_REFERENCE, b->reference);
		send__disconnect(c->client, (uint8_t)b->reason_code, props);
		mosquitto_property_free_all(&props);
	}
	/* Drops the entry through our DISCONNECT callback: `c` is not used after this. */
	b->kicked[i] = mosquitto_kick_client_by_clientid(b->ids[i], false) == MOSQ_ERR_SUCCESS;
	if(!b->kicked[i]) return;
	counters.evicted++;
	if(mqtt5) b->mqtt5++;
	else b->mqtt3++;
}

/* What the evicted clients were told, for the answer's message: MQTT 5 clients the reason code, MQTT 3.x
 * clients nothing (their protocol has no DISCONNECT from the server: the connection is closed). */
static void describe_reasons(char *out, size_t size, const struct batch *b, int code)
{
	if(b->mqtt5 && b->mqtt3){
		snprintf(out, size, "%zu MQTT 5 client%s sent reason code 0x%02X, %zu MQTT 3 client%s closed (no reason "
				"code in MQTT 3)", b->mqtt5, b->mqtt5 == 1 ? "" : "s", code, b->mqtt3, b->mqtt3 == 1 ? "" : "s");
	}else if(b->mqtt5){
		snprintf(out, size, "MQTT 5 reason code 0x%02X", code);
	}else if(b->mqtt3){
		snprintf(out, size, "MQTT 3 clients only: connections closed, no reason code (MQTT 3 has none)");
	}else{
		snprintf(out, size, "nobody disconnected");
	}
}

static void finish_batch(struct batch *b, double now)
{
	cJSON *responses = cJSON_CreateArray();
	cJSON *r = responses ? new_response(responses, "evict", b->correlation) : NULL;
	size_t done = 0;
	for(size_t i = 0; i < b->n; i++) done += b->kicked[i];
	counters.unknown += b->n - done;
	if(r){
		char message[320], reasons[160];
		int code = send__disconnect ? b->reason_code : MQTT_RC_ADMINISTRATIVE_ACTION;
		describe_reasons(reasons, sizeof(reasons), b, code);
		snprintf(message, sizeof(message), "evicted %zu of %zu clients at <= %g/s in %.2f s; %zu had left; %s",
				done, b->n, b->rate, now - b->start, b->n - done, reasons);
		add_strings(r, "evicted", b->ids, b->kicked, true, b->n);
		add_strings(r, "unknown", b->ids, b->kicked, false, b->n);
		add_strings(r, "refused", b->ids, NULL, false, 0);
		cJSON_AddNumberToObject(r, "reasonCode", code);
		cJSON_AddNumberToObject(r, "mqtt5", (double)b->mqtt5);
		cJSON_AddNumberToObject(r, "mqtt3", (double)b->mqtt3);
		cJSON_AddNumberToObject(r, "seconds", now - b->start);
		cJSON_AddStringToObject(r, "message", message);
	}
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "mqttlb: evicted %zu of %zu clients in %.2f s", done, b->n, now - b->start);
	if(responses) publish_answer(b->requester, responses);
}

static void run_batch(double now)
{
	struct batch *b = batch;
	while(b->next < b->n && now >= b->start + (double)b->next / b->rate){
		disconnect_one(b, b->next++);
	}
	if(b->next == b->n){
		batch = NULL;
		finish_batch(b, now);
		free_batch(b);
	}
}

/* ---------------------------------------------------------------- callbacks */
static bool authorised(struct mosquitto *client)
{
	const char *id = mosquitto_client_id(client), *user = mosquitto_client_username(client);
	if(!id || strcmp(id, cfg.control_client_id)) return false;
	return !cfg.control_username || (user && !strcmp(user, cfg.control_username));
}

static void handle_commands(cJSON *responses, const struct mosquitto_evt_control *ed, const char *requester)
{
	cJSON *tree = cJSON_ParseWithLength(ed->payload, ed->payloadlen);
	const cJSON *commands = cJSON_GetObjectItemCaseSensitive(tree, "commands");
	if(!tree){
		error_response(responses, NULL, NULL, "payload is not valid JSON");
	}else if(!cJSON_IsArray(commands) || cJSON_GetArraySize(commands) < 1){
		error_response(responses, NULL, NULL, "payload must be {\"commands\": [...]} with at least one command");
	}else if(cJSON_GetArraySize(commands) > MAX_COMMANDS){
		error_response(responses, NULL, NULL, "more than 8 commands in one message");
	}else{
		for(const cJSON *cmd = commands->child; cmd; cmd = cmd->next){
			const cJSON *name = cJSON_GetObjectItemCaseSensitive(cmd, "command");
			const cJSON *corr = cJSON_GetObjectItemCaseSensitive(cmd, "correlationData");
			const char *command = cJSON_IsString(name) ? name->valuestring : NULL;
			const char *correlation = cJSON_IsString(corr) ? corr->valuestring : NULL;
			counters.commands++;
			if(!cJSON_IsObject(cmd) || !command){
				error_response(responses, NULL, correlation, "a command must be an object with a string \"command\"");
			}else if(corr && !correlation){
				error_response(responses, command, NULL, "correlationData must be a string");
			}else if(!strcmp(command, "listClients")){
				list_clients(responses, correlation);
			}else if(!strcmp(command, "evict")){
				evict(responses, cmd, correlation, requester);
			}else{
				error_response(responses, command, correlation, "unknown command (known: listClients, evict)");
			}
		}
	}
	cJSON_Delete(tree);
}

static int on_control(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_control *ed = event_data;
	const char *requester = mosquitto_client_id(ed->client);
	cJSON *responses = cJSON_CreateArray();
	(void)event;
	(void)userdata;
	if(!responses || !requester){
		cJSON_Delete(responses);
		return MOSQ_ERR_SUCCESS;
	}
	if(!authorised(ed->client)){
		counters.unauthorised++;
		mosquitto_log_printf(MOSQ_LOG_WARNING, "mqttlb: command from unauthorised client %s refused", requester);
		error_response(responses, NULL, NULL, "not authorised: commands are accepted from the control client only");
	}else{
		handle_commands(responses, ed, requester);
	}
	if(cJSON_GetArraySize(responses) > 0){
		publish_answer(requester, responses);
	}else{
		cJSON_Delete(responses);
	}
	return MOSQ_ERR_SUCCESS;
}

static int on_message(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_message *ed = event_data;
	const char *id = mosquitto_client_id(ed->client);
	(void)event;
	(void)userdata;
	if(!id) return MOSQ_ERR_SUCCESS;
	struct client_load *c = find_client(id);
	if(!c || c->client != ed->client) c = track(ed->client, id, c);
	if(c){
		c->window_msgs++;
		c->window_bytes += ed->payloadlen;
	}
	return MOSQ_ERR_SUCCESS;
}

static int on_disconnect(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_disconnect *ed = event_data;
	const char *id = mosquitto_client_id(ed->client);
	(void)event;
	(void)userdata;
	struct client_load *c = id ? find_client(id) : NULL;
	if(c && c->client == ed->client) drop_client(id);
	return MOSQ_ERR_SUCCESS;
}

static int on_tick(int event, void *event_data, void *userdata)
{
	double now = now_seconds();
	(void)event;
	(void)event_data;
	(void)userdata;
	if(now - last_roll >= ROLL_SECONDS){
		roll_rates(now);
		last_roll = now;
	}
	if(batch) run_batch(now);
	return MOSQ_ERR_SUCCESS;
}

/* ---------------------------------------------------------------- plugin entry points */
int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for(int i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

static bool parse_number(const char *key, const char *text, double low, double high, double *out)
{
	char *end;
	double value = strtod(text, &end);
	if(end == text || *end || !(value >= low && value <= high)){
		mosquitto_log_printf(MOSQ_LOG_ERR, "mqttlb: plugin_opt_%s must be a number from %g to %g, not '%s'",
				key, low, high, text);
		return false;
	}
	*out = value;
	return true;
}

static bool parse_option(const struct mosquitto_opt *opt)
{
	double value;
	if(!strcasecmp(opt->key, "control_client_id")) return (cfg.control_client_id = strdup(opt->value)) != NULL;
	if(!strcasecmp(opt->key, "control_username")) return (cfg.control_username = strdup(opt->value)) != NULL;
	if(!strcasecmp(opt->key, "max_per_second")) return parse_number(opt->key, opt->value, 0.001, 100000, &cfg.max_per_second);
	if(!strcasecmp(opt->key, "load_window_seconds")) return parse_number(opt->key, opt->value, 1, 3600, &cfg.load_window);
	if(!strcasecmp(opt->key, "max_clients")){
		if(!parse_number(opt->key, opt->value, 1, 100000, &value)) return false;
		cfg.max_clients = (long)value;
		return true;
	}
	if(!strcasecmp(opt->key, "mqtt5_clean_start_transient")){
		cfg.mqtt5_clean_start_transient = !strcasecmp(opt->value, "true");
		if(cfg.mqtt5_clean_start_transient || !strcasecmp(opt->value, "false")) return true;
	}
	mosquitto_log_printf(MOSQ_LOG_ERR, "mqttlb: unknown or invalid option plugin_opt_%s %s", opt->key, opt->value);
	return false;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata, struct mosquitto_opt *options,
		int option_count)
{
	(void)userdata;
	for(int i = 0; i < option_count; i++){
		if(!parse_option(&options[i])) return MOSQ_ERR_INVAL;
	}
	if(!cfg.control_client_id || !cfg.control_client_id[0]){
		mosquitto_log_printf(MOSQ_LOG_ERR, "mqttlb: plugin_opt_control_client_id is required");
		return MOSQ_ERR_INVAL;
	}
	plugin_id = identifier;
	last_roll = now_seconds();
	if(grow_table()
			|| mosquitto_callback_register(plugin_id, MOSQ_EVT_CONTROL, on_control, CONTROL_TOPIC, NULL)
			|| mosquitto_callback_register(plugin_id, MOSQ_EVT_MESSAGE, on_message, NULL, NULL)
			|| mosquitto_callback_register(plugin_id, MOSQ_EVT_DISCONNECT, on_disconnect, NULL, NULL)
			|| mosquitto_callback_register(plugin_id, MOSQ_EVT_TICK, on_tick, NULL, NULL)){
		mosquitto_log_printf(MOSQ_LOG_ERR, "mqttlb: could not register the plugin's callbacks");
		return MOSQ_ERR_UNKNOWN;
	}
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "mqttlb: eviction plugin ready on %s (control client %s, <= %g/s, "
			"<= %ld clients per command; MQTT 5 reason codes %s)", CONTROL_TOPIC, cfg.control_client_id,
			cfg.max_per_second, cfg.max_clients, send__disconnect ? "as requested" : "0x98 only");
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	if(plugin_id){
		mosquitto_callback_unregister(plugin_id, MOSQ_EVT_CONTROL, on_control, CONTROL_TOPIC);
		mosquitto_callback_unregister(plugin_id, MOSQ_EVT_MESSAGE, on_message, NULL);
		mosquitto_callback_unregister(plugin_id, MOSQ_EVT_DISCONNECT, on_disconnect, NULL);
		mosquitto_callback_unregister(plugin_id, MOSQ_EVT_TICK, on_tick, NULL);
	}
	for(size_t i = 0; i < nbuckets; i++){
		for(struct client_load *c = buckets[i], *next; c; c = next){
			next = c->next;
			free(c->id);
			free(c);
		}
	}
	free(buckets);
	buckets = NULL;
	nbuckets = nclients = 0;
	free_batch(batch);
	batch = NULL;
	free(cfg.control_client_id);
	free(cfg.control_username);
	cfg.control_client_id = cfg.control_username = NULL;
	return MOSQ_ERR_SUCCESS;
}
