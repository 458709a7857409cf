/* flowd.h - umbrella header of the flowd connector SDK: include this one.
 *
 *   #include <flowd/flowd.h>
 *   cc my_connector.c $(pkg-config --cflags --libs flowd-connector)
 *
 * See connector.h for the API and docs/connectors.md for the tutorial.
 */
#ifndef FLOWD_PUBLIC_FLOWD_H
#define FLOWD_PUBLIC_FLOWD_H

#include "connector.h"
#include "error.h"
#include "version.h"

#endif
