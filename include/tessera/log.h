/* Logging: the library never prints unless asked (TSR_LOG or a callback). */
#ifndef TESSERA_LOG_H
#define TESSERA_LOG_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tsr_log_level {
    TSR_LOG_OFF = 0,
    TSR_LOG_ERROR = 1,
    TSR_LOG_WARN = 2,
    TSR_LOG_INFO = 3,
    TSR_LOG_DEBUG = 4
} tsr_log_level;

/* Receives one formatted message without trailing newline. */
typedef void (*tsr_log_fn)(tsr_log_level level, const char *message, void *user);

/* "error" | "warn" | "info" | "debug" | "off" -> level; unknown text gives `fallback`. */
tsr_log_level tsr_log_level_parse(const char *text, tsr_log_level fallback);
const char *tsr_log_level_name(tsr_log_level level);

#ifdef __cplusplus
}
#endif
#endif
